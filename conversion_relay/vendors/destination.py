"""What a destination is: one configured account of a vendor, and the keys every one accepts.

A vendor's settings schema extends :class:`DestinationSchema` with its own options, and its
adapter is built from a :class:`DestinationSettings`; loading the configuration file
(:mod:`conversion_relay.config.settings`) puts the two together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

#: Most partitions (parallel drains) a destination may have.
MAX_PARTITIONS = 16


@dataclass(frozen=True)
class DestinationSettings:
    """One configured account of a vendor.

    ``api_key`` is read from the environment variable named by ``api_key_env`` and is left out
    of ``repr`` so that it cannot reach a log line through a stray ``%r``.  It is empty when the
    variable is not set: producers need no keys; workers refuse to start without them
    (:func:`conversion_relay.config.rules.require_api_keys`).
    """

    name: str
    vendor: str
    base_url: str
    api_key: str = field(repr=False)
    api_key_env: str
    connect_timeout_seconds: float
    read_timeout_seconds: float
    max_events: int
    max_bytes: int
    test_event_code: str | None = None
    enabled: bool = True
    #: Requests per second allowed to all workers together; 0 for no limit.
    rate_limit_per_second: float = 0.0
    #: Destinations with the same key share one limit (default: the vendor and API key).
    rate_limit_key: str = ""
    #: Drain tasks that may work this destination at once (vendors that want parallel requests).
    parallel_drains: int = 1
    #: Canonical event names this destination never receives (counted as skipped).
    skip_events: frozenset[str] = frozenset()
    #: Most events the destination's stream may hold; ``enqueue`` refuses more (0: no cap).
    max_backlog_events: int = 1_000_000
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def queue(self) -> str:
        """Celery queue of this destination: one per destination, so a slow vendor waits alone."""
        return f"relay.{self.name}"

    @property
    def request_timeout_seconds(self) -> float:
        """Longest a request may last: the transport enforces it as a total timeout."""
        return self.connect_timeout_seconds + self.read_timeout_seconds

    @property
    def partitions(self) -> int:
        """The destination's stream is split into one partition per parallel drain."""
        return self.parallel_drains


class DestinationSchema(Schema):
    """Keys every ``[destinations.<name>]`` table accepts; vendors subclass it for their own."""

    class Meta:
        unknown = RAISE

    vendor = fields.String(required=True)
    base_url = fields.Url(require_tld=False, schemes={"http", "https"})
    api_key_env = fields.String(validate=validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]*\Z"))
    api_key = fields.Raw(load_only=True)
    connect_timeout_seconds = fields.Float(validate=validate.Range(min=0.01, max=120.0))
    read_timeout_seconds = fields.Float(validate=validate.Range(min=0.01, max=600.0))
    max_events = fields.Integer(validate=validate.Range(min=1))
    max_bytes = fields.Integer(validate=validate.Range(min=1024))
    test_event_code = fields.String(allow_none=True)
    enabled = fields.Boolean()
    rate_limit_per_second = fields.Float(validate=validate.Range(min=0.0))
    rate_limit_key = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.:-]{1,64}\Z"))
    parallel_drains = fields.Integer(validate=validate.Range(min=1, max=MAX_PARTITIONS))
    skip_events = fields.List(fields.String())
    max_backlog_events = fields.Integer(validate=validate.Range(min=0))

    @validates_schema(skip_on_field_errors=False)
    def _no_inline_key(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "api_key" in data:
            raise ValidationError(
                "Secrets do not belong in the file; put the key in an environment variable "
                "and name that variable in api_key_env.",
                "api_key",
            )
