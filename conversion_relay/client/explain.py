"""What the relay would send for an event, to each destination, without sending or storing it.

A developer wiring up a new event wants to see the vendor's request before the first one goes
out, and an operator wants to know why a vendor receives less than was enqueued.  The
explanation takes the drain's own path for an event that arrives alone: ``skip_events``, the
adapter's mapping (a :class:`~conversion_relay.vendors.base.Skip` is the reason shown), then the parts
joined into request bodies by the same :class:`~conversion_relay.vendors.batching.Batcher` and envelope.  Nothing
touches Redis or a vendor, and no header is shown, so the API key never is.

``Relay.explain`` validates first, exactly as ``enqueue`` does; this module explains what
passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from conversion_relay.config.settings import Settings
from conversion_relay.vendors import VendorAdapter
from conversion_relay.vendors.base import Skip
from conversion_relay.vendors.batching import Batcher
from conversion_relay.vendors.destination import DestinationSettings

#: The reason shown for a destination that is configured but disabled (it has no drain).
DISABLED = "disabled"


@dataclass(frozen=True)
class ExplainedRequest:
    """One HTTP request as a drain would send it for the event alone; no headers (they hold
    the key).  ``body`` is the decoded JSON, ``size`` the exact bytes on the wire."""

    method: str
    path: str
    body: Any
    size: int
    query: str = ""


@dataclass(frozen=True)
class DestinationExplanation:
    """What one destination does with one event: ``send`` its ``requests``, or ``skip`` it
    with ``reason`` (a Skip reason, ``skip_events``, ``unmapped_event`` or ``disabled``), or
    ``dead_letter`` it (``mapping_error``: the drain would store it for a replay after a fix)."""

    destination: str
    vendor: str
    action: str
    reason: str | None = None
    requests: list[ExplainedRequest] = field(default_factory=list)


@dataclass(frozen=True)
class EventExplanation:
    event_id: str
    event_name: str
    destinations: list[DestinationExplanation]


@dataclass(frozen=True)
class Explanation:
    """The result of ``Relay.explain``: one entry per event, in the order given."""

    events: list[EventExplanation]

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` and tools; requests without a query leave ``query`` out."""
        out = asdict(self)
        for event in out["events"]:
            for dest in event["destinations"]:
                if dest["reason"] is None:
                    del dest["reason"]
                for request in dest["requests"]:
                    if not request["query"]:
                        del request["query"]
        return out

    def lines(self) -> list[str]:
        """The human form: per event, per destination, each request and its body as sent (compact
        JSON, one line: ``--json`` is the form to read a large body in)."""
        out: list[str] = []
        for index, event in enumerate(self.events):
            out.append(f"event {index}: {event.event_name} {event.event_id}")
            for dest in event.destinations:
                where = f"  {dest.destination} ({dest.vendor}):"
                if dest.action != "send":
                    verb = "skipped" if dest.action == "skip" else "would be dead-lettered"
                    out.append(f"{where} {verb} ({dest.reason})")
                    continue
                count = len(dest.requests)
                out.append(f"{where} {count} request{'s' if count != 1 else ''}")
                for request in dest.requests:
                    query = f"?{request.query}" if request.query else ""
                    out.append(f"    {request.method} {request.path}{query} ({request.size:,} bytes)")
                    out.append(f"    {orjson.dumps(request.body).decode()}")
        return out


def explain_events(
    settings: Settings,
    adapter: Callable[[str], VendorAdapter],
    events: Sequence[dict[str, Any]],
    targets: Sequence[str],
    every_destination: bool,
) -> Explanation:
    """Explain loaded (validated, hashed) events for ``targets``; with ``every_destination``,
    the disabled destinations too, as skipped."""
    shown = list(settings.destinations) if every_destination else list(targets)
    explained = []
    for event in events:
        per_destination = []
        for name in shown:
            dest = settings.destination(name)
            if not dest.enabled:
                per_destination.append(DestinationExplanation(name, dest.vendor, "skip", DISABLED))
            else:
                per_destination.append(explain_one(dest, adapter(name), event))
        explained.append(EventExplanation(event["event_id"], event["event_name"], per_destination))
    return Explanation(explained)


def explain_one(dest: DestinationSettings, adapter: VendorAdapter, event: dict[str, Any]) -> DestinationExplanation:
    """What a drain would do with one stored event at one destination: the drain's ``_parts``
    and batching (conversion_relay/engine/drain.py), without sending."""

    def skipped(reason: str) -> DestinationExplanation:
        return DestinationExplanation(dest.name, dest.vendor, "skip", reason)

    if event.get("event_name") in dest.skip_events:
        return skipped("skip_events")
    try:
        parts = adapter.map_event(orjson.loads(orjson.dumps(event)))
    except Skip as skip:
        return skipped(skip.reason)
    except Exception as exc:  # the drain dead-letters it as mapping_error; say so, do not crash
        return DestinationExplanation(dest.name, dest.vendor, "dead_letter", f"mapping_error: {type(exc).__name__}")
    if not parts:
        return skipped("unmapped_event")
    batcher = Batcher(
        max_events=dest.max_events,
        max_bytes=dest.max_bytes,
        envelope_size=adapter.envelope_size,
        max_held_parts=len(parts) + 1,
        max_events_for=adapter.max_parts_for,
    )
    chunks = []
    for part in parts:
        chunks += batcher.add(part.group, part.body, "explain", 0.0)
    requests = []
    for chunk in chunks + batcher.drain():
        body = adapter.body_for(chunk.group, chunk.parts)
        request = adapter.request_for(chunk.group, body)
        requests.append(
            ExplainedRequest(
                method=request.method,
                path=urlsplit(request.url).path,
                body=_decoded(body, dest.api_key),
                size=len(body),
                query=urlencode(dict(request.params or {})),
            )
        )
    return DestinationExplanation(dest.name, dest.vendor, "send", requests=requests)


def _decoded(body: bytes, api_key: str) -> Any:
    """The body as JSON (every vendor's body is), with the API key masked should it be in it."""
    text = body.decode()
    if api_key and api_key in text:
        text = text.replace(api_key, "***")
    return orjson.loads(text)
