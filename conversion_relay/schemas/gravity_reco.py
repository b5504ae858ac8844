"""Gravity RECO (Yusp) WebshopServlet payloads: events, items and users.

Values travel as ``nameValues`` lists of strings; an array is the same name repeated, and no
value may be null or empty (the vendor asks for both).  Used for vendor-native payloads, where
catalogue and user updates come from.  A user's name value that names personal data (an
e-mail, a phone, a person's name) must already be a hex digest: the relay stores no such
plaintext.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

#: Event types about one item; they need ``itemId``.
ITEM_EVENT_TYPES = frozenset(
    {
        "VIEW", "BUY", "RATING", "ADD_TO_CART", "REMOVE_FROM_CART", "ADD_TO_FAVORITES", "REMOVE_FROM_FAVORITES",
        "REC_CLICK", "ADD_TO_WISHLIST", "REMOVE_FROM_WISHLIST", "HIDE_PRODUCT", "UNHIDE_PRODUCT", "NOT_INTERESTED",
        "FREE_VIEW", "PAID_VIEW", "SUBSCRIPTION_VIEW", "CLICK_OUT", "SHARE",
    }
)  # fmt: skip
#: User name values that carry personal data (compared without case, spaces, '-' or '_'):
#: these names exactly, and any name containing one of ``PERSONAL_PARTS``.
PERSONAL_NAMES = frozenset({"name", "firstname", "lastname", "fullname", "surname", "givenname"})
PERSONAL_PARTS = ("email", "mail", "phone", "mobile")
_DIGEST = re.compile(r"[0-9a-f]{32}|[0-9a-f]{64}")
_SEPARATORS = re.compile(r"[\s_\-]")


def _text(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(min=1, error="Empty; leave the field out instead."), **kwargs)


class NameValueSchema(Schema):
    class Meta:
        unknown = RAISE

    name = _text(required=True)
    value = _text(required=True)


class UserNameValueSchema(NameValueSchema):
    """A user's name value: personal data only as a hex digest (an item's "name" is a product's)."""

    @validates_schema
    def _no_plaintext_personal_data(self, pair: dict[str, str], **kwargs: Any) -> None:
        key = _SEPARATORS.sub("", pair["name"].lower()).replace("md5", "").replace("sha256", "")
        personal = key in PERSONAL_NAMES or any(part in key for part in PERSONAL_PARTS)
        if personal and not _DIGEST.fullmatch(pair["value"]):
            raise ValidationError(
                f"{pair['name']!r} holds personal data; send its SHA-256 hex digest, or leave it out.", "value"
            )


def _name_values(schema: type[Schema] = NameValueSchema) -> fields.List:
    return fields.List(fields.Nested(schema), validate=validate.Length(max=1000))


class RecoEventSchema(Schema):
    class Meta:
        unknown = RAISE

    eventType = _text(required=True)  # noqa: N815 - the vendor's field names
    itemId = _text()  # noqa: N815
    userId = _text()  # noqa: N815
    cookieId = _text()  # noqa: N815
    time = fields.Integer(strict=True, validate=validate.Range(min=0))
    recommendationId = _text()  # noqa: N815
    nameValues = _name_values()  # noqa: N815

    @validates_schema
    def _item_and_login(self, event: dict[str, Any], **kwargs: Any) -> None:
        if event["eventType"] in ITEM_EVENT_TYPES and "itemId" not in event:
            raise ValidationError(f"Required for {event['eventType']} events.", "itemId")
        if event["eventType"] == "LOGIN" and not ("userId" in event and "cookieId" in event):
            raise ValidationError("LOGIN needs both userId and cookieId.", "userId")


class RecoItemSchema(Schema):
    class Meta:
        unknown = RAISE

    itemId = _text(required=True)  # noqa: N815
    title = _text()
    itemType = _text()  # noqa: N815
    hidden = fields.Boolean()
    fromDate = fields.Integer(strict=True)  # noqa: N815
    toDate = fields.Integer(strict=True)  # noqa: N815
    nameValues = _name_values()  # noqa: N815


class RecoUserSchema(Schema):
    class Meta:
        unknown = RAISE

    userId = _text(required=True)  # noqa: N815
    hidden = fields.Boolean()
    nameValues = _name_values(UserNameValueSchema)  # noqa: N815


class HiddenItemSchema(Schema):
    """An item to hide: RECO never deletes, it stops recommending hidden items."""

    class Meta:
        unknown = RAISE

    itemId = _text(required=True)  # noqa: N815


#: Native operations and the schema of one item of each.
OPERATIONS: dict[str, type[Schema]] = {
    "addEvents": RecoEventSchema,
    "addItems": RecoItemSchema,
    "addUsers": RecoUserSchema,
    "hideItems": HiddenItemSchema,
}
