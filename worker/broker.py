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
"""

from __future__ import annotations

from celery.app.amqp import AMQP
from kombu import Connection


class RelayConnection(Connection):
    """A kombu ``Connection`` whose ``collect()`` leaves no channel behind for ``close()``."""

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
