"""Tracify server-side events: ``POST /api/v1/events`` with ``{"events": [...]}``.

- Mapping: PageView → pageview, ViewContent → productview, AddToCart → addtocart, Purchase →
  purchase (``order_id``, ``currency``, ``amount``, ``ITEMn``/``AMTn``/``QTYn``), the names in
  ``conversion_events`` → conversion (``conversion_id``, ``currency``, money); anything else
  (a login, a search) is skipped.  ``url`` and ``data.origin`` come from the event's page,
  ``Referer`` from its referrer, and ``utm_*``/``trc_*`` parameters of its URL are flattened into
  ``data``.  Events without the end user's IP and user agent are skipped: Tracify requires both.
- Identity: Tracify's routine (SHA-256 hex, drop the last five characters, SHA-256 again) over
  the e-mail (1), ``ip|user agent`` (2), the IP (3) and the user agent (4).  The first step for
  the e-mail is the SHA-256 the producer made of the trimmed, lower-cased address before
  enqueue; the relay never stores the address.
- Batching: ``max_events`` per request (not documented; default 100), 1 MB.
- Authentication: header ``tracify-token: <key>``, no prefix.
- Responses: one status for the whole request.  A 400 or 422 refusing a request of several
  events splits it until the refused event is alone, so its neighbours are still delivered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from marshmallow import ValidationError, fields, validate

from schemas import reading
from schemas.tracify import DATETIME_FORMAT, TracifyEventSchema, TracifyRequestSchema
from worker.outcomes import Accepted, Outcome, Rejected, excerpt_of
from worker.settings import DestinationSchema
from worker.vendors.base import Part, Request, VendorAdapter, encode

DEFAULT_CONVERSIONS = ("Lead", "CompleteRegistration", "Subscribe", "StartTrial", "Contact", "Schedule")
_TYPES = {"PageView": "pageview", "ViewContent": "productview", "AddToCart": "addtocart", "Purchase": "purchase"}
#: Keys of ``data`` the relay writes itself.
RESERVED_DATA_KEYS = frozenset({"origin", "Referer", "order_id", "conversion_id", "currency", "amount", "value"})


def _web_url(event: Mapping[str, Any]) -> str | None:
    """The page's absolute web address: ``page.location`` if it is one (it may be a route or a
    screen name), else ``event_source_url``."""
    for candidate in (reading.page(event).get("location"), event.get("event_source_url")):
        if candidate and urlsplit(candidate).scheme in ("http", "https") and urlsplit(candidate).hostname:
            return candidate
    return None


def anonymise(raw: str) -> str:
    """Tracify's routine: ``sha256(sha256(raw).hex()[:-5]).hex()``."""
    return _second_step(hashlib.sha256(raw.encode()).hexdigest())


def _second_step(first: str) -> str:
    return hashlib.sha256(first[:-5].encode()).hexdigest()


class TracifySettingsSchema(DestinationSchema):
    customer_site_id = fields.UUID(required=True)
    #: Money field of a conversion: the tracify.dev page says ``amount``, the SDK ``value``.
    conversion_money_field = fields.String(validate=validate.OneOf(("amount", "value")))
    #: ``.`` as in the tracify.dev examples, or ``,`` as Tracify's own plugin writes amounts.
    decimal_separator = fields.String(validate=validate.OneOf((".", ",")))
    #: ``data.origin`` as ``https://host`` (documentation) or a bare host (seen in integrations).
    origin_format = fields.String(validate=validate.OneOf(("url", "host")))
    #: URL parameters flattened into ``data``: ``tracking`` (utm_*, trc_*) or ``all``.
    url_parameters = fields.String(validate=validate.OneOf(("tracking", "all")))
    conversion_events = fields.List(fields.String())
    #: Currency for purchases and conversions that carry none (Tracify requires one).
    default_currency = fields.String(validate=validate.Regexp(r"^[A-Z]{3}\Z"))
    #: Send the session identity (2, ``ip|user agent``).
    session_identity = fields.Boolean()


class TracifyAdapter(VendorAdapter):
    vendor = "tracify"
    title = "Tracify"
    default_destination_name = "tracify"
    default_base_url = "https://api.tracify.ai"
    sandbox_prefix = "tracify"
    sandbox_options = {"customer_site_id": "00000000-0000-0000-0000-000000000000"}
    settings_schema = TracifySettingsSchema
    max_events_limit = 1000
    default_max_events = 100
    splits_rejected_batches = True

    def __init__(self, destination: Any) -> None:
        super().__init__(destination)
        options = destination.options
        self.csid = str(options["customer_site_id"])
        self.money_field = options.get("conversion_money_field", "amount")
        self.separator = options.get("decimal_separator", ".")
        self.origin_format = options.get("origin_format", "url")
        self.all_parameters = options.get("url_parameters", "tracking") == "all"
        self.conversions = frozenset(options.get("conversion_events", DEFAULT_CONVERSIONS))
        self.default_currency = options.get("default_currency", "EUR")
        self.session_identity = options.get("session_identity", True)

    def map_event(self, event: Mapping[str, Any]) -> list[Part]:
        name = event["event_name"]
        kind = _TYPES.get(name) or ("conversion" if name in self.conversions else None)
        url, ip, agent = _web_url(event), reading.ip_address(event), reading.user_agent(event)
        if kind is None or not url or not ip or not agent:
            return []
        data = {**self._parameters(url), "origin": self._origin(url)}
        if reading.referrer(event):
            data["Referer"] = reading.referrer(event)
        if kind == "purchase" and not self._purchase(event, data):
            return []
        if kind == "conversion":
            self._conversion(event, data)
        payload = {
            "url": url,
            "customer_site_id": self.csid,
            "identity_data": self._identity(event, ip, agent),
            "datetime": reading.event_datetime(event).strftime(DATETIME_FORMAT),
            "type": kind,
            "data": data,
        }
        return [Part("", encode(payload))]

    def _identity(self, event: Mapping[str, Any], ip: str, agent: str) -> dict[str, int]:
        identity = {anonymise(ip): 3, anonymise(agent): 4}
        if self.session_identity:
            identity[anonymise(f"{ip}|{agent}")] = 2
        email = reading.email_hash(event)
        if email:
            identity[_second_step(email)] = 1
        return identity

    def _purchase(self, event: Mapping[str, Any], data: dict[str, Any]) -> bool:
        total = reading.value(event)
        currency = reading.custom_data(event).get("currency") or self.default_currency
        if total is None:
            return False
        data.update(order_id=reading.order_id(event), currency=currency, amount=self._money(total))
        for n, item in enumerate(reading.line_items(event), start=1):
            data[f"ITEM{n}"] = item.get("title") or item["id"]
            if "item_price" in item:
                data[f"AMT{n}"] = self._money(item["item_price"])
            data[f"QTY{n}"] = str(item.get("quantity", 1))
        return True

    def _conversion(self, event: Mapping[str, Any], data: dict[str, Any]) -> None:
        total = reading.value(event) or 0.0
        currency = reading.custom_data(event).get("currency") or self.default_currency
        data.update(conversion_id=reading.order_id(event), currency=currency)
        data[self.money_field] = self._money(total)

    def _money(self, amount: float) -> str:
        return f"{amount:.2f}".replace(".", self.separator)

    def _origin(self, url: str) -> str:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return host if self.origin_format == "host" else f"{parts.scheme}://{host}"

    def _parameters(self, url: str) -> dict[str, str]:
        """URL parameters for ``data``; never one that would overwrite a field of the vendor's."""
        pairs = parse_qsl(urlsplit(url).query)
        wanted = (k for k in pairs if self.all_parameters or k[0].startswith(("utm_", "trc_")))
        return {k: v for k, v in wanted if k not in RESERVED_DATA_KEYS}

    def load_native(
        self, payload: Any, operation: str | None, *, phone_region: str | None = None
    ) -> list[dict[str, Any]]:
        """A request body ``{"events": [...]}``, an event or a list of events."""
        if operation is not None:
            raise ValidationError({"operation": ["Tracify has one call; leave operation out."]})
        if isinstance(payload, Mapping) and "events" in payload:
            return TracifyRequestSchema().load(payload)["events"]
        return TracifyEventSchema(many=True).load(payload if isinstance(payload, list) else [payload])

    def map_native(self, item: Mapping[str, Any], operation: str | None) -> list[Part]:
        return [Part("", encode(item))]

    def envelope(self, group: str) -> tuple[bytes, bytes]:
        return b'{"events":[', b"]}"

    def request_for(self, group: str, body: bytes) -> Request:
        return Request(
            method="POST",
            url=f"{self.destination.base_url}/api/v1/events",
            headers={"tracify-token": self.destination.api_key, "Content-Type": "application/json"},
            body=body,
        )

    def interpret_success(self, status: int, body: bytes, parts: list[bytes]) -> Outcome:
        try:
            document = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            document = {}
        if isinstance(document, dict) and document.get("status") is False:
            return Rejected(reason="vendor_refused", status=status, excerpt=excerpt_of(body))
        return Accepted(statuses=["ok"] * len(parts))
