"""Tracify server-side events, as the vendor documents them (tracify.dev/events).

Used for vendor-native payloads: ``{"events": [...]}`` or single events.  ``identity_data`` must
already be anonymised (keys are Tracify's double SHA-256, 64 hex characters), so nothing
identifying reaches the relay's storage.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

EVENT_TYPES = ("pageview", "productview", "addtocart", "purchase", "conversion")
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Identity kinds: 1 e-mail, 2 session (ip|user agent), 3 IP, 4 user agent.
IDENTITY_KINDS = (1, 2, 3, 4)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class TracifyEventSchema(Schema):
    class Meta:
        unknown = RAISE

    url = fields.String(required=True, validate=validate.Length(min=7, max=4096))
    customer_site_id = fields.String(required=True)
    identity_data = fields.Dict(
        keys=fields.String(), values=fields.Integer(strict=True, validate=validate.OneOf(IDENTITY_KINDS)), required=True
    )
    datetime = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    data = fields.Dict(keys=fields.String(), values=fields.Raw(), required=True)

    @validates("customer_site_id")
    def _csid(self, value: str, **kwargs: Any) -> None:
        if not _UUID.fullmatch(value):
            raise ValidationError("Not a UUID; use the customer site id (CSID) Tracify gave you.")

    @validates("identity_data")
    def _anonymised(self, value: dict[str, int], **kwargs: Any) -> None:
        if any(not _HEX64.fullmatch(key) for key in value):
            raise ValidationError("Keys must be anonymised: Tracify's double SHA-256, 64 lower-case hex characters.")
        missing = {3, 4} - set(value.values())
        if missing:
            raise ValidationError(f"Missing identity kind {sorted(missing)} (3 = IP, 4 = user agent are required).")

    @validates("datetime")
    def _datetime(self, value: str, **kwargs: Any) -> None:
        try:
            dt.datetime.strptime(value, DATETIME_FORMAT)
        except ValueError:
            raise ValidationError("Not in the form YYYY-MM-DD HH:MM:SS (UTC, no T, no zone).") from None

    @validates_schema
    def _required_data(self, event: dict[str, Any], **kwargs: Any) -> None:
        data = event.get("data") or {}
        needed = ["origin"]
        if event.get("type") == "purchase":
            needed += ["order_id", "currency", "amount"]
        elif event.get("type") == "conversion":
            needed += ["conversion_id", "currency"]
            if "amount" not in data and "value" not in data:
                needed.append("amount")
        missing = [key for key in needed if data.get(key) in (None, "")]
        if missing:
            raise ValidationError({key: ["Missing data for required field."] for key in missing}, "data")


class TracifyRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    events = fields.List(fields.Nested(TracifyEventSchema), required=True, validate=validate.Length(min=1))
