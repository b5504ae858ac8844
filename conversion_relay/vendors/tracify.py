"""Tracify server-side events: ``POST /api/v1/events`` with ``{"events": [...]}``.

- Mapping: PageView → pageview, ViewContent → productview, AddToCart → addtocart, Purchase →
  purchase (``order_id``, ``currency``, ``amount``, ``ITEMn``/``AMTn``/``QTYn``), the names in
  ``conversion_events`` → conversion (``conversion_id``, ``currency``, money); anything else
  (a login, a search) is skipped.  ``url`` and ``data.origin`` come from the event's page,
  ``Referer`` from its referrer, and every parameter of its URL is its own key of ``data`` (as
  the vendor page asks; click ids such as ``gclid`` and ``fbclid`` attribute the session), except
  those named in ``drop_url_parameters``, by default names of personal data.  Events without the
  end user's IP and user agent are skipped: Tracify requires both.
- Nothing is invented: a purchase or conversion without a value is skipped (``no_value``), one
  without a currency too (``no_currency``) unless the destination sets ``default_currency``
  (Tracify requires amount and currency); a line item's missing price or quantity is left out.
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

from conversion_relay.outcomes import Accepted, DeadLetterReason, Outcome, Rejected, excerpt_of
from conversion_relay.schemas import reading
from conversion_relay.schemas.tracify import DATETIME_FORMAT, TracifyEventSchema, TracifyRequestSchema
from conversion_relay.vendors.base import Part, Request, Skip, VendorAdapter, encode
from conversion_relay.vendors.destination import DestinationSchema

DEFAULT_CONVERSIONS = ("Lead", "CompleteRegistration", "Subscribe", "StartTrial", "Contact", "Schedule")
_TYPES = {"PageView": "pageview", "ViewContent": "productview", "AddToCart": "addtocart", "Purchase": "purchase"}
#: Keys of ``data`` the relay writes itself.
RESERVED_DATA_KEYS = frozenset({"origin", "Referer", "order_id", "conversion_id", "currency", "amount", "value"})
#: URL parameters not passed by default: names shops and forms use for personal data, which
#: Tracify wants only anonymised.  Compared as :func:`_parameter_key` writes them.
DEFAULT_DROP_URL_PARAMETERS = (
    "email", "mail", "emailaddress", "phone", "phonenumber", "tel", "telephone", "mobile",
    "name", "fullname", "firstname", "lastname", "fname", "lname", "surname", "givenname",
    "address", "street", "zip", "zipcode", "postcode", "postalcode", "city", "birthday", "birthdate", "dob",
)  # fmt: skip


def _parameter_key(name: str) -> str:
    """A parameter name without case, ``-``, ``_`` or ``.``: ``E-Mail``, ``e_mail`` and
    ``email`` name the same thing."""
    return "".join(c for c in name.lower() if c not in "-_.")


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


def email_identity(email_hash: str) -> str:
    """The identity Tracify is sent for an e-mail address: its second step over the SHA-256 hex
    digest the producer stores."""
    return _second_step(email_hash)


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
    #: URL parameters not passed on (replaces the default list; ``[]`` passes every one).
    drop_url_parameters = fields.List(fields.String(validate=validate.Length(min=1)))
    conversion_events = fields.List(fields.String())
    #: Currency for purchases and conversions that carry none (Tracify requires one).  No
    #: default: without it such events are skipped rather than counted in a guessed currency.
    default_currency = fields.String(validate=validate.Regexp(r"^[A-Z]{3}\Z"))
    #: Send the session identity (2, ``ip|user agent``).
    session_identity = fields.Boolean()


class TracifyAdapter(VendorAdapter):
    vendor = "tracify"
    title = "Tracify"
    default_destination_name = "tracify"
    default_base_url = "https://api.tracify.ai"
    settings_schema = TracifySettingsSchema
    #: Neither events nor bytes per request are documented: 1,000 and 1 MB are assumed caps.
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
        dropped = options.get("drop_url_parameters", DEFAULT_DROP_URL_PARAMETERS)
        self.dropped_parameters = frozenset(_parameter_key(name) for name in dropped)
        self.conversions = frozenset(options.get("conversion_events", DEFAULT_CONVERSIONS))
        self.default_currency = options.get("default_currency")
        self.session_identity = options.get("session_identity", True)

    @classmethod
    def person_values(cls, node: Mapping[str, Any]) -> list[Any]:
        """The identities of ``identity_data`` (its keys), the e-mail's among them."""
        identity = node.get("identity_data")
        return [key for key in identity if isinstance(key, str)] if isinstance(identity, dict) else []

    @classmethod
    def person_aliases(cls, email: str | None, phone: str | None, external_id: str | None) -> list[str]:
        return [email_identity(email)] if email else []

    def map_event(self, event: Mapping[str, Any]) -> list[Part]:
        name = event["event_name"]
        kind = _TYPES.get(name) or ("conversion" if name in self.conversions else None)
        url, ip, agent = _web_url(event), reading.ip_address(event), reading.user_agent(event)
        if kind is None:
            raise Skip("unmapped_event")
        if not url:
            raise Skip("no_absolute_url")
        if not ip:
            raise Skip("no_client_ip")
        if not agent:
            raise Skip("no_user_agent")
        data = {**self._parameters(url), "origin": self._origin(url)}
        if reading.referrer(event):
            data["Referer"] = reading.referrer(event)
        if kind == "purchase":
            self._purchase(event, data)
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
            identity[email_identity(email)] = 1
        return identity

    def _money_of(self, event: Mapping[str, Any]) -> tuple[str, str]:
        """The event's amount and currency, both of which Tracify requires of purchases and
        conversions (seed 002): never 0 for a missing value, never a guessed currency."""
        total = reading.value(event)
        if total is None:
            raise Skip("no_value")
        currency = reading.custom_data(event).get("currency") or self.default_currency
        if not currency:
            raise Skip("no_currency")
        return self._money(total), currency

    def _purchase(self, event: Mapping[str, Any], data: dict[str, Any]) -> None:
        amount, currency = self._money_of(event)
        data.update(order_id=reading.order_id(event), currency=currency, amount=amount)
        for n, item in enumerate(reading.line_items(event), start=1):
            data[f"ITEM{n}"] = item.get("title") or item["id"]
            if "item_price" in item:
                data[f"AMT{n}"] = self._money(item["item_price"])
            if "quantity" in item:
                data[f"QTY{n}"] = str(item["quantity"])

    def _conversion(self, event: Mapping[str, Any], data: dict[str, Any]) -> None:
        amount, currency = self._money_of(event)
        data.update(conversion_id=reading.order_id(event), currency=currency)
        data[self.money_field] = amount

    def _money(self, amount: float) -> str:
        return f"{amount:.2f}".replace(".", self.separator)

    def _origin(self, url: str) -> str:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return host if self.origin_format == "host" else f"{parts.scheme}://{host}"

    def _parameters(self, url: str) -> dict[str, str]:
        """URL parameters for ``data``, each its own key (seed 002), minus the dropped ones;
        never one that would overwrite a field of the vendor's."""
        pairs = parse_qsl(urlsplit(url).query)
        return {
            k: v for k, v in pairs if k not in RESERVED_DATA_KEYS and _parameter_key(k) not in self.dropped_parameters
        }

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
            return Rejected(reason=DeadLetterReason.VENDOR_REFUSED, status=status, excerpt=excerpt_of(body))
        return Accepted(statuses=["ok"] * len(parts))
