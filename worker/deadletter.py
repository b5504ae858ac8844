"""The dead-letter store: what could not be delivered, kept with the reason, until replayed or
purged.

Entries are hashes indexed by two sorted sets scored by the last failure time: one for all
destinations and one per destination, so listing by time or destination never scans.  Replay
moves an entry back in one Lua script, so an entry is in exactly one place at any moment and two
replays of it cannot both succeed: vendor payloads go to the destination's waiting batches, and
stored events that never became vendor payloads (``mapping_error``, ``redelivered_too_often``:
``entry_field`` is set) go back to the destination's stream, to be mapped again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from worker.partitions import event_hash, payload_hash

if TYPE_CHECKING:
    import redis

    from worker.keys import Keys

#: Read this many entries per round trip when listing.
PAGE = 200

_REPLAY = """
-- KEYS: entry, dlq index, destination index, retry zset, batch hash, destination stats
-- ARGV: entry id, batch id, now
local parts = redis.call('HGET', KEYS[1], 'parts')
if not parts then return 0 end
redis.call('HINCRBY', KEYS[6], 'waiting', #cjson.decode(parts))
local group = redis.call('HGET', KEYS[1], 'group') or ''
local destination = redis.call('HGET', KEYS[1], 'destination')
redis.call('HSET', KEYS[5], 'id', ARGV[2], 'destination', destination, 'group', group,
  'parts', parts, 'attempts', '0', 'first_failure_at', ARGV[3], 'last_failure_at', ARGV[3],
  'next_attempt_at', ARGV[3], 'last_status', '', 'last_reason', 'replayed',
  'last_excerpt', 'replay of dead letter ' .. ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

_REPLAY_ENTRY = """
-- KEYS: entry, dlq index, destination index, the stream partition.  ARGV: entry id
local parts = redis.call('HGET', KEYS[1], 'parts')
if not parts then return 0 end
local field = redis.call('HGET', KEYS[1], 'entry_field')
for _, body in ipairs(cjson.decode(parts)) do redis.call('XADD', KEYS[4], '*', field, body) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""


@dataclass
class DeadLetter:
    """Parts a destination could not take, and why.

    ``errors`` maps the index of a part to the vendor's message for it, when the vendor judged
    parts one by one.  ``entry_field`` is ``c`` or ``n`` when the parts are stored entries (a
    canonical event or a native item) that were never mapped to a vendor payload.
    """

    destination: str
    vendor: str
    group: str
    parts: list[str]
    reason: str
    status: int | None
    excerpt: str
    attempts: int
    first_failed_at: float
    last_failed_at: float
    errors: dict[str, str] = field(default_factory=dict)
    entry_field: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_redis(self) -> dict[str, str]:
        data = asdict(self)
        data["parts"] = json.dumps(self.parts)
        data["errors"] = json.dumps(self.errors)
        data["status"] = "" if self.status is None else str(self.status)
        return {k: str(v) for k, v in data.items()}

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> DeadLetter:
        data = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            id=data["id"],
            destination=data["destination"],
            vendor=data["vendor"],
            group=data["group"],
            parts=json.loads(data["parts"]),
            reason=data["reason"],
            status=int(data["status"]) if data["status"] else None,
            excerpt=data["excerpt"],
            attempts=int(data["attempts"]),
            first_failed_at=float(data["first_failed_at"]),
            last_failed_at=float(data["last_failed_at"]),
            errors=json.loads(data.get("errors") or "{}"),
            entry_field=data.get("entry_field", ""),
        )

    def to_json(self) -> dict[str, Any]:
        """The entry with its parts decoded, as ``export`` writes it."""
        data = asdict(self)
        data["events"] = [json.loads(p) for p in data.pop("parts")]
        return data

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["events"] = len(data.pop("parts"))
        return data


@dataclass(frozen=True)
class Selection:
    """Which dead letters an operation applies to.  Empty means all of them."""

    ids: tuple[str, ...] = ()
    destination: str | None = None
    reason: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None

    @property
    def is_everything(self) -> bool:
        return not (self.ids or self.destination or self.reason or self.since or self.until)


class DeadLetterStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._replay = client.register_script(_REPLAY)
        self._replay_entry = client.register_script(_REPLAY_ENTRY)

    def add(self, pipe: redis.client.Pipeline, letter: DeadLetter) -> None:
        pipe.hset(self.keys.dlq_entry(letter.id), mapping=letter.to_redis())
        pipe.zadd(self.keys.dlq, {letter.id: letter.last_failed_at})
        pipe.zadd(self.keys.dlq_for(letter.destination), {letter.id: letter.last_failed_at})

    def get(self, entry_id: str) -> DeadLetter | None:
        raw = self.redis.hgetall(self.keys.dlq_entry(entry_id))
        return DeadLetter.from_redis(raw) if raw else None

    def select(self, selection: Selection) -> Iterator[DeadLetter]:
        """Matching entries, oldest first, read a page at a time.

        Safe to replay or purge entries while iterating: each next page starts after the
        entries of this page that are still in the index.
        """
        if selection.ids:
            found = (self.get(entry_id) for entry_id in selection.ids)
            yield from (letter for letter in found if letter and _matches(letter, selection))
            return
        index = self.keys.dlq_for(selection.destination) if selection.destination else self.keys.dlq
        low = selection.since if selection.since is not None else "-inf"
        high = selection.until if selection.until is not None else "+inf"
        yielded, offset = 0, 0
        while True:
            ids = self.redis.zrangebyscore(index, low, high, start=offset, num=PAGE)
            if not ids:
                return
            pipe = self.redis.pipeline(transaction=False)
            for entry_id in ids:
                pipe.hgetall(self.keys.dlq_entry(entry_id.decode()))
            for raw in pipe.execute():
                if not raw:
                    continue
                letter = DeadLetter.from_redis(raw)
                if _matches(letter, selection):
                    yield letter
                    yielded += 1
                    if selection.limit is not None and yielded >= selection.limit:
                        return
            pipe = self.redis.pipeline(transaction=False)
            for entry_id in ids:
                pipe.zscore(index, entry_id)
            offset += sum(score is not None for score in pipe.execute())

    def count(self, destination: str | None = None) -> int:
        return int(self.redis.zcard(self.keys.dlq_for(destination) if destination else self.keys.dlq))

    def replay(self, letter: DeadLetter, now: float | None = None, partitions: int = 1) -> str | None:
        """Move an entry back to its destination, due now.

        Vendor payloads become a waiting batch; stored events (``entry_field`` set) go back to
        the partition of the destination's stream they belong to (of ``partitions``).

        Returns:
            The id of the new waiting batch (or of the letter, for stored events), or ``None``
            if the entry was already gone.
        """
        indexes = [self.keys.dlq_entry(letter.id), self.keys.dlq, self.keys.dlq_for(letter.destination)]
        if letter.entry_field:
            encoded = letter.parts[0].encode() if letter.parts else b""
            if letter.entry_field == "c":
                slot = event_hash(json.loads(encoded)) % partitions if encoded else 0
            else:
                slot = payload_hash(encoded) % partitions
            stream = self.keys.stream(letter.destination, slot)
            moved = self._replay_entry(keys=[*indexes, stream], args=[letter.id])
            return letter.id if moved else None
        batch_id = uuid.uuid4().hex
        moved = self._replay(
            keys=[
                *indexes,
                self.keys.retry(letter.destination),
                self.keys.batch(letter.destination, batch_id),
                self.keys.stats(letter.destination),
            ],
            args=[letter.id, batch_id, time.time() if now is None else now],
        )
        return batch_id if moved else None

    def purge(self, letter: DeadLetter) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.dlq_entry(letter.id))
        pipe.zrem(self.keys.dlq, letter.id)
        pipe.zrem(self.keys.dlq_for(letter.destination), letter.id)
        return bool(pipe.execute()[0])

    def prune(self, older_than: float) -> int:
        """Delete entries whose last failure is before ``older_than`` (retention)."""
        return sum(self.purge(letter) for letter in self.select(Selection(until=older_than)))


def _matches(letter: DeadLetter, selection: Selection) -> bool:
    if selection.destination and letter.destination != selection.destination:
        return False
    if selection.reason and letter.reason != selection.reason:
        return False
    if selection.since is not None and letter.last_failed_at < selection.since:
        return False
    if selection.until is not None and letter.last_failed_at > selection.until:
        return False
    return True
