"""The seam every vendor plugs into.

A vendor adapter knows four things about its API and nothing about Redis, Celery or retries:

1. its mapping: a canonical event becomes zero or more *parts* (one vendor event each, already
   JSON-encoded), each tagged with a *group*: parts of one group may share a request;
2. its batching rule: the envelope around a group's parts and the count and byte limits;
3. its request: URL, method and authentication headers;
4. its response handling: a response becomes an :mod:`conversion_relay.outcomes` outcome.

The delivery engine (:mod:`conversion_relay.engine.delivery`) does the rest the same way for every vendor.
A new vendor is a module in this package holding one :class:`VendorAdapter` subclass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import orjson
from marshmallow import ValidationError

from conversion_relay.outcomes import Outcome, classify_failure, skip_reason
from conversion_relay.vendors.destination import DestinationSchema

if TYPE_CHECKING:
    from marshmallow import Schema

    from conversion_relay.vendors.destination import DestinationSettings


class Skip(Exception):
    """Raised by :meth:`VendorAdapter.map_event`: the vendor cannot take this event as it is.

    ``reason`` is a short name (``no_client_ip``, ``no_user_id``, ``unmapped_event``, ...) that
    is counted per destination and shown by ``status``, so an operator sees why a vendor
    receives less than was enqueued.  docs/mapping.md lists each vendor's reasons.  It must be
    an identifier (it becomes a field of the stats hash): anything else raises ``ValueError``
    here, in the adapter, where the drain dead-letters the event as ``mapping_error``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(skip_reason(reason))
        self.reason = reason


class Part(NamedTuple):
    """One vendor event, encoded, and the group of requests it may travel in."""

    group: str
    body: bytes


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str] | None = None


def encode(payload: Any) -> bytes:
    """Compact UTF-8 JSON, the encoding of every request body part."""
    return orjson.dumps(payload)


class VendorAdapter:
    """Base class of vendor adapters.  Subclasses set the class attributes and override the
    ``map_event``, ``envelope``, ``request_for`` and ``interpret_success`` methods."""

    #: Registry key, the ``vendor`` value of a destination table.
    vendor: ClassVar[str] = ""
    #: Human name used in messages and the demo report.
    title: ClassVar[str] = ""
    #: Destination name in the built-in (sandbox) configuration.
    default_destination_name: ClassVar[str] = ""
    #: Production base URL, or ``None`` when the vendor's URL is per customer.
    default_base_url: ClassVar[str | None] = None
    #: Schema of the destination table, with the vendor's own keys.
    settings_schema: ClassVar[type[Schema]] = DestinationSchema

    #: Most events one request may carry: ``max_events`` is refused above it.  The vendor's
    #: documented limit where ``max_events_documented``, else the relay's assumed cap.
    max_events_limit: ClassVar[int] = 1000
    max_events_documented: ClassVar[bool] = False
    #: Most bytes one request body may have: ``max_bytes`` is refused above it (documented or
    #: assumed, as for events).  A 413 splits a batch all the same.
    max_bytes_limit: ClassVar[int] = 1_000_000
    max_bytes_documented: ClassVar[bool] = False
    default_max_events: ClassVar[int] = 100
    default_max_bytes: ClassVar[int] = 1_000_000
    default_rate_limit_per_second: ClassVar[float] = 0.0
    default_parallel_drains: ClassVar[int] = 1
    #: Canonical event names not sent unless the destination's ``skip_events`` says otherwise.
    default_skip_events: ClassVar[tuple[str, ...]] = ()
    #: Whether a refused request of several parts is split to find the part the vendor refuses
    #: (vendors that judge a request whole, with no per-event results).
    splits_rejected_batches: ClassVar[bool] = False
    #: What to tell the user when no base URL can be made.
    base_url_hint: ClassVar[str] = "The vendor has no public default; set base_url."

    def __init__(self, destination: DestinationSettings) -> None:
        self.destination = destination

    @classmethod
    def base_url_for(cls, options: Mapping[str, Any]) -> str | None:
        """The base URL when the destination gives none (some vendors build it per customer)."""
        return cls.default_base_url

    @classmethod
    def person_values(cls, node: Mapping[str, Any]) -> Iterable[Any]:
        """Values in one object of this vendor's payloads (a native item, a request body or
        its group, at any depth) that name the person, as stored: digests, or ids.

        Erasure (:mod:`conversion_relay.ops.personal`) walks every object of what is stored and
        compares these with the person's.  ``user_data.em``/``ph``/``external_id``, the canonical
        event's, are looked at for every vendor; a vendor that carries the person elsewhere says
        where.  A value may be a string, an integer or a list of them.
        """
        return ()

    @classmethod
    def person_aliases(cls, email: str | None, phone: str | None, external_id: str | None) -> Iterable[str]:
        """What this vendor is sent instead of the stored digests of a person (a further hashing
        step), so that erasure finds it in waiting batches and dead letters too."""
        return ()

    def max_parts_for(self, group: str) -> int:
        """Most parts one request of ``group`` may carry."""
        return self.destination.max_events

    def map_event(self, event: Mapping[str, Any]) -> list[Part]:
        """Vendor parts for one canonical event.

        Raises:
            Skip: the vendor cannot take the event; its reason is counted.  (An empty list
                counts as skipped with the reason ``unmapped_event``.)
        """
        raise NotImplementedError

    def load_native(
        self, payload: Any, operation: str | None, *, phone_region: str | None = None
    ) -> list[dict[str, Any]]:
        """Check a vendor-native payload and return the items to store, one per stream entry.

        A payload is what the vendor documents: a whole request body or one item of it.  Runs in
        the producer, so personal data it carries is hashed here, before anything is stored
        (phone numbers without a country code are read in ``phone_region``).

        Raises:
            marshmallow.ValidationError: field by field.
        """
        raise ValidationError(f"The {self.title} destination takes canonical events only.")

    def map_native(self, item: Mapping[str, Any], operation: str | None) -> list[Part]:
        """Vendor parts for one stored native item (already checked by :meth:`load_native`)."""
        raise NotImplementedError

    def envelope(self, group: str) -> tuple[bytes, bytes]:
        """The bytes before and after the comma-joined parts of one request of ``group``."""
        raise NotImplementedError

    def request_for(self, group: str, body: bytes) -> Request:
        """The HTTP request carrying ``body``.  Credentials go in headers, never in the URL."""
        raise NotImplementedError

    def interpret_success(self, status: int, body: bytes, parts: list[bytes]) -> Outcome:
        """Outcome of a 2xx response to a request carrying ``parts``."""
        raise NotImplementedError

    def interpret(self, status: int, headers: Mapping[str, str], body: bytes, parts: list[bytes]) -> Outcome:
        if 200 <= status < 300:
            return self.interpret_success(status, body, parts)
        return classify_failure(status, headers, body)

    def body_for(self, group: str, parts: list[bytes]) -> bytes:
        head, tail = self.envelope(group)
        return head + b",".join(parts) + tail

    def envelope_size(self, group: str) -> int:
        head, tail = self.envelope(group)
        return len(head) + len(tail)
