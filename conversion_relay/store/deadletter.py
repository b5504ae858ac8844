"""The dead-letter store: what could not be delivered, kept with the reason, until replayed,
purged or past ``dead_letter_ttl_seconds`` (30 days by default: letters hold events, IP
addresses and user agents included, so they do not stay for ever).

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from conversion_relay.outcomes import DeadLetterReason, Reason, dead_letter_reason
from conversion_relay.store import backlog, records, waiting
from conversion_relay.store.partitions import event_hash, payload_hash
from conversion_relay.store.records import (
    INTEGER,
    MASKED_MESSAGES,
    MASKED_TEXT,
    NUMBER,
    OPTIONAL_INTEGER,
    TEXT,
    TEXT_LIST,
    Codec,
    HashFormat,
    stored,
)
from conversion_relay.store.selection import InvalidSelection, Selection

if TYPE_CHECKING:
    import redis

    from conversion_relay.store.keys import Keys

__all__ = ["PAGE", "DeadLetter", "DeadLetterReason", "DeadLetterStore", "InvalidSelection", "Selection"]

#: Read this many entries per round trip when listing.
PAGE = 200

#: A dead letter's reason: a :class:`DeadLetterReason` or ``http_<status>``, checked on the way
#: in and out.
REASON = Codec(str, dead_letter_reason)


@dataclass
class DeadLetter:
    """Parts a destination could not take, and why: the hash ``<p>:dlq:entry:<id>``.

    ``reason`` is given as a :data:`~conversion_relay.outcomes.Reason` or its name (an unknown
    one raises ``ValueError``).  ``errors`` maps the index of a part to the vendor's message for
    it, when the vendor judged parts one by one.  ``entry_field`` is ``c`` or ``n`` when the
    parts are stored entries (a canonical event or a native item) that were never mapped to a
    vendor payload.  The vendor's words (excerpt, per-part errors) are masked on the way to Redis.
    """

    destination: str = stored(TEXT)
    vendor: str = stored(TEXT)
    group: str = stored(TEXT)
    parts: list[str] = stored(TEXT_LIST)
    reason: Reason = stored(REASON)
    status: int | None = stored(OPTIONAL_INTEGER)
    excerpt: str = stored(MASKED_TEXT)
    attempts: int = stored(INTEGER)
    first_failed_at: float = stored(NUMBER)
    last_failed_at: float = stored(NUMBER)
    errors: dict[str, str] = stored(MASKED_MESSAGES, absent="{}", default_factory=dict)
    entry_field: str = stored(TEXT, absent="", default="")
    id: str = stored(TEXT, default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.reason = dead_letter_reason(self.reason)

    def to_redis(self) -> dict[str, str]:
        return FORMAT.to_hash(self)

    @classmethod
    def from_redis(cls, raw: Mapping[bytes, bytes]) -> DeadLetter:
        return FORMAT.from_hash(raw)

    def to_json(self) -> dict[str, Any]:
        """The entry with its parts decoded, as ``export`` writes it."""
        data = asdict(self)
        data["events"] = [json.loads(p) for p in data.pop("parts")]
        return data

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["events"] = len(data.pop("parts"))
        return data

    def brief(self) -> dict[str, Any]:
        """The summary without anything taken from the events: no parts and no request group
        (Gravity Field's holds the user, the session and the device's IP and user agent)."""
        data = self.summary()
        data.pop("group")
        return data


#: The one reader and writer of a dead letter's hash.
FORMAT = HashFormat(DeadLetter)

# KEYS: entry, dlq index, destination index, retry zset, batch hash, destination stats
# ARGV: entry id, batch id, now
# The letter is deleted first: a write that frees memory lets the script finish when Redis
# is full (see conversion_relay.store.fenced).  The waiting batch is written by
# conversion_relay.store.waiting's own Lua, with every field of its format.
_REPLAY = (
    """
local parts = redis.call('HGET', KEYS[1], $parts)
if not parts then return 0 end
local group = redis.call('HGET', KEYS[1], $group) or ''
local destination = redis.call('HGET', KEYS[1], $destination)
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
"""
    + waiting.lua_park(
        "KEYS[5]",
        "KEYS[4]",
        "KEYS[6]",
        {
            "id": "ARGV[2]",
            "destination": "destination",
            "group": "group",
            "parts": "parts",
            "attempts": "'0'",
            "first_failure_at": "ARGV[3]",
            "last_failure_at": "ARGV[3]",
            "next_attempt_at": "ARGV[3]",
            "last_status": "''",
            "last_reason": "'replayed'",
            "last_excerpt": "'replay of dead letter ' .. ARGV[1]",
        },
        "#cjson.decode(parts)",
    )
    + """
return 1
"""
)

_REPLAY_ENTRY = """
-- KEYS: entry, dlq index, destination index, the stream partition.  ARGV: entry id
local parts = redis.call('HGET', KEYS[1], $parts)
if not parts then return 0 end
local field = redis.call('HGET', KEYS[1], $entry_field)
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
for _, body in ipairs(cjson.decode(parts)) do redis.call('XADD', KEYS[4], '*', field, body) end
return 1
"""


# KEYS: entry, dlq index, destination index.  ARGV: entry id.  DEL first (see conversion_relay.store.fenced).
_PURGE = """
local deleted = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return deleted
"""

# KEYS: dlq index, the index pruned.  ARGV: entry key prefix, destination index prefix, ids.
_PRUNE = """
local deleted = 0
for i = 3, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local destination = redis.call('HGET', key, $destination)
  deleted = deleted + redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
  if destination then redis.call('ZREM', ARGV[2] .. destination, ARGV[i]) end
end
return deleted
"""

# KEYS: entry, dlq index, destination index.  ARGV: id, parts as read, parts to keep ('' for
# none), errors to keep.  Returns 1 done, 0 gone, -1 changed since read.  Erasure's (see
# conversion_relay.ops.erase): deletions first, so it works when Redis is full.
_CUT = """
local parts = redis.call('HGET', KEYS[1], $parts)
if not parts then return 0 end
if parts ~= ARGV[2] then return -1 end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
else
  redis.call('HDEL', KEYS[1], $parts, $errors)
  redis.call('HSET', KEYS[1], $parts, ARGV[3], $errors, ARGV[4])
end
return 1
"""

REPLAY_SCRIPT, REPLAY_ENTRY_SCRIPT, PURGE_SCRIPT, PRUNE_SCRIPT, CUT_SCRIPT = (
    records.lua(script, FORMAT.names) for script in (_REPLAY, _REPLAY_ENTRY, _PURGE, _PRUNE, _CUT)
)


class DeadLetterStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._replay = client.register_script(REPLAY_SCRIPT)
        self._replay_entry = client.register_script(REPLAY_ENTRY_SCRIPT)
        self._purge = client.register_script(PURGE_SCRIPT)
        self._prune = client.register_script(PRUNE_SCRIPT)
        self._cut = client.register_script(CUT_SCRIPT)

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

    def parts_of(self, entry_id: str) -> tuple[bytes, list[str], str, str, dict[str, str]] | None:
        """A letter's parts as stored (the text :meth:`cut` checks is unchanged), decoded, its
        group, destination and per-part errors; ``None`` if it is gone."""
        names = [FORMAT.field(name) for name in ("parts", "group", "destination", "errors")]
        raw, group, destination, errors = self.redis.hmget(self.keys.dlq_entry(entry_id), names)
        if raw is None:
            return None
        return (
            raw,
            FORMAT.decode("parts", raw),
            FORMAT.decode("group", group or b""),
            FORMAT.decode("destination", destination or b""),
            FORMAT.decode("errors", errors),
        )

    def cut(self, entry_id: str, destination: str, read: bytes, keep: Sequence[int], errors: Mapping[str, str]) -> int:
        """Keep only the parts at indexes ``keep`` of a letter whose parts are still ``read``
        (delete it if none are kept), its per-part ``errors`` (as read with them) renumbered with
        them.  One script, every write after a deletion: works when Redis is full.

        Returns:
            1 done, 0 gone, -1 changed since read.
        """
        parts = FORMAT.decode("parts", read)
        kept = [parts[n] for n in keep]
        renumbered = {str(i): errors[str(n)] for i, n in enumerate(keep) if str(n) in errors}
        keys = [self.keys.dlq_entry(entry_id), self.keys.dlq, self.keys.dlq_for(destination)]
        args = [entry_id, read, FORMAT.encode("parts", kept) if kept else "", FORMAT.encode("errors", renumbered)]
        return int(self._cut(keys=keys, args=args))

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
            if letter.entry_field == backlog.CANONICAL.decode():
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
        """Delete an entry and its index members; False if it was gone.  A script, not MULTI:
        Redis refuses to queue any command of a transaction when full, and a purge is what an
        operator reaches for then."""
        keys = [self.keys.dlq_entry(letter.id), self.keys.dlq, self.keys.dlq_for(letter.destination)]
        return bool(self._purge(keys=keys, args=[letter.id]))

    def prune(self, older_than: float, destinations: Iterable[str] = ()) -> int:
        """Delete every entry whose last failure is before ``older_than`` (retention), with its
        members in both indexes; return how many entries were deleted.

        Dead letters hold events -- the end user's IP address and user agent among them -- so
        retention must not depend on an entry still being whole: an index member whose entry is
        gone is removed too, and so are old members of the indexes of ``destinations``.  Only
        deletions, in a script, so it works when Redis is full.
        """
        deleted = 0
        prefixes = [self.keys.dlq_entry(""), self.keys.dlq_for("")]
        for index in [self.keys.dlq, *(self.keys.dlq_for(d) for d in destinations)]:
            while ids := self.redis.zrangebyscore(index, "-inf", f"({older_than}", 0, PAGE):
                deleted += int(self._prune(keys=[self.keys.dlq, index], args=[*prefixes, *ids]))
        return deleted


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
