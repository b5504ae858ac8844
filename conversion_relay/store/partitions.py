"""Which partition of a destination an event goes to.

A destination's stream is split into ``parallel_drains`` partitions, each drained by at most
one task at a time, so parallel drains never compete for the same events.  An event goes to
the partition of its user (the first of ``external_id``, ``em``, ``ph``, ``browser_id``,
``reco_cookie_id``, ``gravity_field_user_id``, ``visitor_id``, else its ``event_id``), so one
user's events stay in order within one partition.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

#: User identifiers tried in order; the first present decides the partition.
_USER_KEYS = (
    "external_id",
    "em",
    "ph",
    "browser_id",
    "reco_cookie_id",
    "gravity_field_user_id",
    "visitor_id",
)


def event_hash(event: Mapping[str, Any]) -> int:
    """A stable hash of the event's user, taken modulo the partition count."""
    user = event.get("user_data") or {}
    for key in _USER_KEYS:
        value = user.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value:
            return zlib.crc32(str(value).encode())
    return zlib.crc32(str(event.get("event_id", "")).encode())


def payload_hash(encoded: bytes) -> int:
    """For vendor-native items, which name no user the relay knows: spread by content."""
    return zlib.crc32(encoded)
