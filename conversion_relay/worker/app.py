"""The Celery application: ``celery -A conversion_relay.worker.app worker``.

Settings are loaded when this module is imported, so a worker with a bad configuration stops at
start-up with the message naming the key.  Each destination gets its own queue
(``relay.<name>``); ingest and admin tasks have theirs.  A worker consumes every queue by
default; give a slow vendor workers of its own with ``-Q relay.<name>``.
"""

from __future__ import annotations

import sys
from os import EX_CONFIG
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from conversion_relay.config.rules import require_api_keys
from conversion_relay.config.settings import Settings, load_settings
from conversion_relay.worker.broker import celery_redis_conf, startup_problem
from conversion_relay.worker.observability import init_sentry, install_log_filter, install_log_format
from conversion_relay.worker.scheduling import SchedulerStep

INGEST_QUEUE = "relay.ingest"
ADMIN_QUEUE = "relay.admin"
#: URL schemes of RabbitMQ (AMQP 0-9-1) brokers.
AMQP_TRANSPORTS = frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"})


class RelayCelery(Celery):
    relay_settings: Settings
    # Broker connections whose teardown after a lost Redis does not kill the worker (Celery and
    # kombu 5.7 otherwise do, when an acks_late task is running): see conversion_relay/worker/broker.py.
    amqp_cls = "conversion_relay.worker.broker:RelayAMQP"


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """The visibility timeout (an unacked message comes back after it) for the brokers that have
    one, as Redis does; none for RabbitMQ, which takes an unacked message back as soon as the
    consumer's channel closes, and whose transport would pass the option on to
    ``amqp.Connection`` as an unknown keyword argument."""
    scheme = settings.broker_url.split(";", 1)[0].strip().partition("://")[0].lower()
    if scheme in AMQP_TRANSPORTS:
        return {}
    return {"visibility_timeout": int(settings.visibility_timeout_seconds)}


def create_app(settings: Settings | None = None) -> RelayCelery:
    settings = settings or load_settings()
    # Loading needs no keys (producers have none); a worker sends, so it needs every one.
    require_api_keys(settings)
    app = RelayCelery(
        "conversion_relay",
        include=["conversion_relay.tasks.delivery", "conversion_relay.tasks.ingest", "conversion_relay.tasks.admin"],
    )
    app.relay_settings = settings
    names = [INGEST_QUEUE, ADMIN_QUEUE] + [d.queue for d in settings.destinations.values()]
    # Each queue gets its own exchange and key: with Celery's defaults every queue would be
    # bound to the default exchange under one key, and a message would reach all of them.
    queues = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in names]
    app.conf.update(
        # The broker's and the result backend's URLs, and their TLS options (conversion_relay/worker/broker.py).
        **celery_redis_conf(settings),
        result_expires=3600,
        task_ignore_result=True,
        # JSON only: a pickle payload from the broker would be code execution.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A task's message is acknowledged after it ran, and comes back if its worker dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=broker_transport_options(settings),
        result_backend_transport_options={"visibility_timeout": int(settings.visibility_timeout_seconds)},
        broker_connection_retry_on_startup=True,
        task_queues=queues,
        task_default_queue=INGEST_QUEUE,
        task_routes={
            "relay.enqueue": {"queue": INGEST_QUEUE},
            "relay.enqueue_native": {"queue": INGEST_QUEUE},
            "relay.admin": {"queue": ADMIN_QUEUE},
        },
        worker_hijack_root_logger=True,
        # Messages from any program: what Celery would crash on is refused (conversion_relay/worker/guard.py).
        worker_consumer="conversion_relay.worker.guard:GuardedConsumer",
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    app.steps["worker"].add(SchedulerStep)
    return app


app = create_app()


@signals.after_setup_logger.connect
def _mask_secrets_in_logs(**kwargs: object) -> None:
    install_log_filter(app.relay_settings.secrets)
    install_log_format(app.relay_settings.log_format)


@signals.worker_process_init.connect
def _sentry_in_pool_process(**kwargs: object) -> None:
    init_sentry(app.relay_settings.secrets)


@signals.celeryd_init.connect
def _sentry_in_main_process(**kwargs: object) -> None:
    init_sentry(app.relay_settings.secrets)


@signals.celeryd_init.connect
def _refuse_unusable_redis(**kwargs: object) -> None:
    """Wrong Redis credentials or a certificate that does not verify end the worker at once,
    in one line without the URL, instead of a reconnect loop that never succeeds."""
    problem = startup_problem(app.relay_settings)
    if problem:
        print(f"conversion-relay: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(EX_CONFIG)
