"""Every Redis key conversion-relay writes, in one place.

``<p>`` is ``relay.key_prefix`` (default ``cr``), ``<d>`` a destination name.

=============================  ==========  ====================================================
key                            type        holds
=============================  ==========  ====================================================
``<p>:stream:<d>``             stream      events accepted by ``enqueue`` and not yet resolved;
                                           field ``c`` is the canonical event (JSON, PII
                                           hashed), ``n`` a vendor-native payload.  Consumer
                                           group ``relay``; an entry is XACKed and XDELed in the
                                           same transaction that records its outcome.
``<p>:retry:<d>``              zset        ids of batches waiting for another attempt, scored
                                           by the time (epoch s) they are due.  A batch being
                                           sent is re-scored to now + lease, so a worker that
                                           dies mid-send leaves it due again after the lease.
``<p>:batch:<d>:<id>``         hash        a waiting batch: ``parts`` (JSON list of vendor
                                           payloads), ``group``, ``attempts``,
                                           ``first_failure_at``, ``last_failure_at``,
                                           ``next_attempt_at``, ``last_status``,
                                           ``last_reason``, ``last_excerpt``.
``<p>:dlq``                    zset        dead-letter ids scored by last failure time.
``<p>:dlq:<d>``                zset        the same, for one destination.
``<p>:dlq:entry:<id>``         hash        a dead letter: ``destination``, ``vendor``,
                                           ``group``, ``parts``, ``errors``, ``reason``,
                                           ``status``, ``excerpt``, ``attempts``,
                                           ``first_failed_at``, ``last_failed_at``.
``<p>:stats:<d>``              hash        counters: ``accepted``, ``delivered``,
                                           ``duplicate``, ``test_ok``, ``skipped``, ``retried``,
                                           ``dead_lettered``, ``requests``, ``split``, ...
``<p>:lease:<d>:<slot>``       string      token of the drain task that owns one of the
                                           destination's ``parallel_drains`` slots (PX:
                                           expires if that worker dies).
``<p>:pause:<d>``              string      set while the destination backs off (PX = wait).
``<p>:rate:<key>``             zset        times of the requests let through in the last
                                           rate window, shared by destinations with the same
                                           ``rate_limit_key``.
``<p>:tick``                   string      held for one tick by the worker that schedules.
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

    def stream(self, dest: str) -> str:
        return f"{self.prefix}:stream:{dest}"

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

    def lease(self, dest: str, slot: int = 0) -> str:
        return f"{self.prefix}:lease:{dest}:{slot}"

    def rate(self, key: str) -> str:
        return f"{self.prefix}:rate:{key}"

    def pause(self, dest: str) -> str:
        return f"{self.prefix}:pause:{dest}"

    @property
    def tick(self) -> str:
        return f"{self.prefix}:tick"
