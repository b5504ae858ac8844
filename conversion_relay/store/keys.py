"""Every Redis key conversion-relay writes, in one place.

``<p>`` is ``relay.key_prefix`` (default ``cr``), ``<d>`` a destination name, ``<k>`` one of the
destination's partitions (``0`` … ``parallel_drains - 1``).

=============================  ==========  ====================================================
key                            type        holds
=============================  ==========  ====================================================
``<p>:stream:<d>``             stream      partition 0 of the events accepted by ``enqueue``
``<p>:stream:<d>:<k>``                     and not yet resolved (partitions 1 and up); field
                                           ``c`` is the canonical event (JSON, PII hashed),
                                           ``n`` a vendor-native payload.  Consumer group
                                           ``relay``, one consumer per drain task; an entry is
                                           XACKed and XDELed in the transaction that records
                                           its outcome.
``<p>:lease:<d>:<k>``          string      token of the drain task that owns partition ``k``
                                           (PX ``lease_seconds``, renewed every second by the
                                           drain's heartbeat thread).
``<p>:inflight:<d>:<k>``       hash        consumer → Redis time (ms) until which its current
                                           request may still be in flight.  A new owner takes
                                           over a consumer's events only after that time.
``<p>:retry:<d>``              zset        ids of batches waiting for another attempt, scored
                                           by the time (epoch s) they are due.  A batch being
                                           sent is re-scored past the end of its request, so
                                           a worker that dies mid-send leaves it due again.
``<p>:batch:<d>:<id>``         hash        a waiting batch (see :mod:`conversion_relay.store.waiting`).
``<p>:dlq``                    zset        dead-letter ids scored by last failure time.
``<p>:dlq:<d>``                zset        the same, for one destination.
``<p>:dlq:entry:<id>``         hash        a dead letter (see :mod:`conversion_relay.store.deadletter`).
``<p>:stats:<d>``              hash        counters (see :mod:`conversion_relay.store.stats`),
                                           ``waiting``: events in waiting batches, and the skip
                                           and dead-letter counts by reason.
``<p>:observed:<d>``           hash        the request duration and batch size histograms and
                                           the time of the last request the vendor took (see
                                           :func:`conversion_relay.store.stats.observe`).
``<p>:workers``                zset        ``<hostname>:<pid>`` of every worker whose scheduler
                                           thread ran lately, scored by the time (epoch s) its
                                           heartbeat lapses (see :mod:`conversion_relay.store.workers`).
``<p>:pause:<d>``              string      set while the destination backs off (PX = wait);
                                           the value is the epoch second it ends.
``<p>:breaker:<d>``            hash        the current run of transient failures:
                                           ``failures``, ``since`` (see :mod:`conversion_relay.engine.breaker`).
``<p>:rate:<key>``             zset        times of the requests let through in the last
                                           rate window, shared by destinations with the same
                                           ``rate_limit_key``.
``<p>:tick``                   string      held for one tick by the worker that schedules.
``<p>:memory``                 string      Redis's ``used_memory`` and ``maxmemory``, as the
                                           producer read them (PX 20 ms).
``<p>:notice:<d>``             hash        dead letters not yet in a notice, per reason:
                                           ``<reason>`` (events), ``<reason>:letters``,
                                           ``<reason>:since`` (epoch s of the first); PX a
                                           week (see :mod:`conversion_relay.store.notices`).
``<p>:notice:gate:<d>:<r>``    string      held for ``notify_interval_seconds`` after a
                                           notice for reason ``r``: at most one an interval.
``<p>:call:<digest>:<d>``      string      a recent ``enqueue`` call the destination stored
                                           (PX ``enqueue_dedup_seconds``): the same call again
                                           is not stored there twice.
=============================  ==========  ====================================================

Keys of one destination never appear in another's, so destinations share nothing but the
server.  No key ever holds a plaintext e-mail, phone or name: the producer hashes them first.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Consumer group every worker reads destination streams with.
GROUP = "relay"


@dataclass(frozen=True)
class Keys:
    prefix: str = "cr"

    def stream(self, dest: str, partition: int = 0) -> str:
        base = f"{self.prefix}:stream:{dest}"
        return base if partition == 0 else f"{base}:{partition}"

    def streams(self, dest: str, partitions: int) -> list[str]:
        return [self.stream(dest, k) for k in range(partitions)]

    def lease(self, dest: str, partition: int = 0) -> str:
        return f"{self.prefix}:lease:{dest}:{partition}"

    def inflight(self, dest: str, partition: int = 0) -> str:
        return f"{self.prefix}:inflight:{dest}:{partition}"

    def retry(self, dest: str) -> str:
        return f"{self.prefix}:retry:{dest}"

    def batch(self, dest: str, batch_id: str) -> str:
        return f"{self.prefix}:batch:{dest}:{batch_id}"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}:dlq"

    def dlq_for(self, dest: str) -> str:
        return f"{self.prefix}:dlq:{dest}"

    def dlq_entry(self, entry_id: str) -> str:
        return f"{self.prefix}:dlq:entry:{entry_id}"

    def stats(self, dest: str) -> str:
        return f"{self.prefix}:stats:{dest}"

    def observed(self, dest: str) -> str:
        return f"{self.prefix}:observed:{dest}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def rate(self, key: str) -> str:
        return f"{self.prefix}:rate:{key}"

    def pause(self, dest: str) -> str:
        return f"{self.prefix}:pause:{dest}"

    def breaker(self, dest: str) -> str:
        return f"{self.prefix}:breaker:{dest}"

    @property
    def tick(self) -> str:
        return f"{self.prefix}:tick"

    @property
    def memory(self) -> str:
        return f"{self.prefix}:memory"

    def notice(self, dest: str) -> str:
        return f"{self.prefix}:notice:{dest}"

    def notice_gate(self, dest: str, reason: str) -> str:
        return f"{self.prefix}:notice:gate:{dest}:{reason}"

    def call(self, digest: str) -> str:
        return f"{self.prefix}:call:{digest}"
