"""Integrations with web frameworks: :mod:`.django` (``enqueue_on_commit``) and :mod:`.flask`
(the ``ConversionRelay`` extension).  Each needs its framework (``pip install
conversion-relay[django]`` or ``[flask]``); asyncio apps use :class:`conversion_relay.AsyncRelay`
directly (see docs/integrations.md).
"""
