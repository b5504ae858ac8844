"""``make chaos``: full-length fault scenarios against real workers, a real redis-server and a
counting sandbox; short versions of the same scenarios run in ``make test``
(``tests/test_chaos_short.py``).

Modules: :mod:`~bench.chaos.scenarios` (what each scenario does, at each scale),
:mod:`~bench.chaos.runner` (one run: start, load, fault, settle, measure),
:mod:`~bench.chaos.processes` (redis-server, the sandbox process, Celery workers),
:mod:`~bench.chaos.vendor` (the counting sandbox), :mod:`~bench.chaos.load` (the producer),
:mod:`~bench.chaos.measure` (the figures), :mod:`~bench.chaos.config` (a configuration the
engine under test accepts), :mod:`~bench.chaos.report` (JSON and the table).
"""
