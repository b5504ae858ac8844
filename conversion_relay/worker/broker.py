"""The broker connection class the Celery app uses: kombu's, with one teardown bug fixed.

Celery 5.7.0 (``celery/worker/consumer/consumer.py``, ``on_connection_error_after_connected``)
tears a lost broker connection down in two steps: ``connection.collect()`` and then, new in
5.7, ``connection.close()``.  With the Redis transport (kombu 5.7.0, every redis-py from 6.4 to
8.1), when a task with ``acks_late`` is running and the consumer is waiting in ``BRPOP`` at the
moment Redis goes away:

1. ``collect()`` closes the default channel, whose ``BRPOP`` read fails with a connection error
   before anything is closed; kombu swallows it and the channel stays open.  ``collect()`` then
   detaches the transport from the connection (``transport.client = None``) but keeps the
   channel as ``_default_channel``.
2. ``close()`` closes that channel again.  This time it gets as far as restoring the unacked
   message, needs a new Redis pool, and builds its parameters from ``transport.client``, which
   is ``None``: ``AttributeError: 'NoneType' object has no attribute 'hostname'``.  That is not
   a connection error, so Celery's ``ignore_errors`` lets it through and the worker exits with
   "Unrecoverable error".

An idle worker survives (nothing unacked to restore); so does Celery 5.6, which only called
``collect()``.  :class:`RelayConnection` forgets the default channel once ``collect()`` is done,
as ``collect()`` means to ("just clear out references"), so the ``close()`` that follows has
nothing left to close twice -- exactly what Celery 5.6 did.  The half-closed channel keeps its
Redis pool, so the running task's late acknowledgement still reaches Redis after the restart;
a message nobody acknowledges comes back after the visibility timeout, as it always did.

Remove this when Celery/kombu no longer close a collected connection's channel again
(``tests/test_redis_restart.py`` tells).

A full Redis, too, must not stop a worker when the broker shares the relay's Redis.  At
``maxmemory`` (``noeviction``) Redis refuses every command of a ``MULTI`` and every command that
may grow memory, and kombu records a received task (``ZADD`` + ``HSET`` in a transaction),
acknowledges it (``ZREM`` + ``HDEL`` in a transaction), declares a queue (``LLEN`` in a
transaction) and publishes one (``LPUSH``) exactly so: the acknowledgement's error ends the
worker ("Unrecoverable error: OutOfMemoryError") and no drain could start to free memory.
:class:`RelayRedisChannel` records and publishes with scripts whose first write cannot grow
memory -- Redis lets such a script finish, as the relay's own scripts do (see
``conversion_relay/store/fenced.py``) -- and sends kombu's other pipelines without ``MULTI`` (each of them is a
set of independent reads or removals; ``client.transaction()``, which kombu uses where it needs
``WATCH``, stays a transaction), so the worker goes on at ``maxmemory`` and delivery frees the
memory.

Redis with TLS (``rediss://``) is configured once, in the URL, and reaches the relay's own
clients, the broker and the result backend alike (:func:`celery_redis_conf`).  redis-py
verifies the server's certificate by default, but kombu turns a ``rediss://`` broker URL
without options into *no* verification (with a warning), and Celery's result backend refuses
such a URL outright; so the options are read from the URL here, verification defaults to
``required`` as in redis-py, and they are handed to Celery as ``broker_use_ssl`` and
``redis_backend_use_ssl``.  :func:`startup_problem` lets a worker refuse wrong credentials or a
certificate it cannot verify with one line, instead of retrying them forever.
"""

from __future__ import annotations

import logging
import ssl
from queue import Empty
from time import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis
from celery.app.amqp import AMQP
from kombu import Connection
from kombu.transport import redis as redis_transport
from kombu.transport import virtual
from kombu.utils.json import dumps

from conversion_relay.store.connection import connect, redis_location, redis_tls

if TYPE_CHECKING:
    from conversion_relay.config.settings import Settings

log = logging.getLogger("conversion_relay.broker")

# KEYS: unacked index, unacked hash.  ARGV: delivery tag, time, message.
_RECORD_UNACKED = """
redis.call('HDEL', KEYS[2], '')
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""

# KEYS: queue, a key that is never written.  ARGV: message.
_PUSH = """
redis.call('DEL', KEYS[2])
return redis.call('LPUSH', KEYS[1], ARGV[1])
"""

#: Deleted (a no-op) before a push, so that the push is allowed at maxmemory.
_NEVER_WRITTEN = "_relay.none"


class _PipelinesWithoutMulti(redis.Redis):
    """``pipeline()`` without ``MULTI`` unless a transaction is asked for explicitly."""

    def pipeline(self, transaction: bool | None = None, shard_hint: Any = None) -> Any:
        return super().pipeline(bool(transaction), shard_hint)


class RelayRedisQoS(redis_transport.QoS):
    """Records deliveries in a way Redis allows at ``maxmemory``."""

    def append(self, message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        record = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self.channel.conn_or_acquire() as client:
            client.register_script(_RECORD_UNACKED)(
                keys=[self.unacked_index_key, self.unacked_key], args=[delivery_tag, time(), record]
            )
        virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        if pipe is not None:
            return super()._remove_from_indices(delivery_tag, pipe)
        with self.channel.conn_or_acquire() as client:
            # Two removals, no transaction: a MULTI is refused whole at maxmemory, and either
            # removal alone is harmless (a tag missing from one index is skipped on restore).
            return (
                client.pipeline(transaction=False)
                .zrem(self.unacked_index_key, delivery_tag)
                .hdel(self.unacked_key, delivery_tag)
            )


#: What kombu raises on a queue item it cannot read: not JSON (ValueError), JSON nested deeper
#: than the decoder goes (RecursionError), JSON that is not a message object (TypeError,
#: KeyError, AttributeError), a body that is not base64 (binascii.Error).
UNREADABLE = (ValueError, RecursionError, TypeError, KeyError, AttributeError)


class RelayRedisChannel(redis_transport.Channel):
    """kombu's Redis channel, recording at maxmemory (see :class:`RelayRedisQoS`) and dropping
    a queue item kombu cannot read instead of stopping the worker.

    kombu decodes each item it pops (``BRPOP``) before Celery sees it; an item that is not a
    kombu message -- any program with access to the broker can push one -- raised out of the
    event loop and stopped the worker ("Unrecoverable error").  The item is already off the list
    and was never recorded as unacknowledged, so dropping it loses nothing a client sent as a
    message; the log line says what kind of item it was, never its content.
    """

    QoS = RelayRedisQoS

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return super()._brpop_read(**options)
        except UNREADABLE as exc:
            log.error("dropped a queue item that is not a message kombu can read (%s)", type(exc).__name__)
            return True

    def _get(self, queue: str) -> Any:
        try:
            return super()._get(queue)
        except UNREADABLE as exc:
            log.error(
                "dropped an item of queue %s that is not a message kombu can read (%s)", queue, type(exc).__name__
            )
            raise Empty() from None

    def _get_client(self) -> Any:
        found = super()._get_client()
        return _PipelinesWithoutMulti if found is redis.Redis else found

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        if kwargs.get("_publish_batch") is not None or (self._expires and queue in self._expires):
            return super()._put(queue, message, **kwargs)
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client:
            client.register_script(_PUSH)(keys=[key, _NEVER_WRITTEN], args=[dumps(message)])


class RelayRedisTransport(redis_transport.Transport):
    Channel = RelayRedisChannel


class RelayConnection(Connection):
    """A kombu ``Connection`` whose ``collect()`` leaves no channel behind for ``close()``, and
    whose Redis transport works at ``maxmemory``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # As a class, not the alias: the connections kombu's pools clone from this one (for
        # publishing) carry it over, where they would not carry over this class.
        if self.get_transport_cls() is redis_transport.Transport:
            self.transport_cls = RelayRedisTransport

    def collect(self, socket_timeout: float | None = None) -> None:
        try:
            super().collect(socket_timeout)
        finally:
            # collect() has detached the transport; a channel it could not close cannot be
            # closed through it any more, and close() would try (and crash) otherwise.
            self._default_channel = None


class RelayAMQP(AMQP):
    """Celery's AMQP helper, building :class:`RelayConnection` for every broker connection."""

    Connection = RelayConnection
    BrokerConnection = RelayConnection


def celery_redis_conf(settings: Settings) -> dict[str, Any]:
    """Celery's broker and result-backend settings for the relay's URLs, TLS options included.

    The result backend is the relay's Redis (``relay.admin`` results).  Only a Redis broker gets
    ``broker_use_ssl``: an ``amqps://`` URL keeps its transport's own TLS handling.
    """
    backend_url, backend_ssl = redis_tls(settings.redis_url, "REDIS_URL (the relay's Redis)")
    broker_url, broker_ssl = redis_tls(settings.broker_url, "CONVERSION_RELAY_BROKER_URL (the broker)")
    conf: dict[str, Any] = {"broker_url": broker_url, "result_backend": backend_url}
    if broker_ssl is not None:
        conf["broker_use_ssl"] = broker_ssl
    if backend_ssl is not None:
        conf["redis_backend_use_ssl"] = backend_ssl
    return conf


def startup_problem(settings: Settings) -> str | None:
    """Why a worker must not start against the relay's Redis or a Redis broker, in one line.

    Wrong credentials and a failed TLS handshake (a certificate that does not verify, TLS to a
    plain port) do not heal by themselves, so they stop the worker at start-up, where a worker
    would otherwise retry them forever; a Redis that is merely out of reach does not -- the
    worker waits for it, as after a restart.  Warns about a ``rediss://`` URL that turns
    certificate verification off, so that it is never off unnoticed.
    """

    urls = {"REDIS_URL": settings.redis_url}
    broker = settings.broker_url.split(";", 1)[0].strip()
    if urlsplit(broker).scheme.lower() in ("redis", "rediss") and broker != settings.redis_url:
        urls["CONVERSION_RELAY_BROKER_URL"] = broker
    for setting, url in urls.items():
        where = redis_location(url)
        _, tls = redis_tls(url, setting)
        if tls is not None and tls["ssl_cert_reqs"] != ssl.CERT_REQUIRED:
            log.warning("TLS to Redis at %s does not verify the server's certificate (%s)", where, setting)
        client = connect(url, socket_timeout=5.0)
        try:
            client.ping()
        except redis.AuthenticationError as exc:
            return f"Redis at {where} refused the credentials ({type(exc).__name__}); check {setting}."
        except redis.ConnectionError as exc:
            cause = exc.__context__
            if isinstance(cause, ssl.SSLError):
                reason = getattr(cause, "reason", None) or type(cause).__name__
                return f"TLS to Redis at {where} failed ({reason}); check {setting} (rediss://, ssl_ca_certs)."
        except redis.RedisError:
            pass  # loading, busy, ...: the worker starts and waits for it
        finally:
            client.close()
    return None
