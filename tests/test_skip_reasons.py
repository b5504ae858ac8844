"""Every skipped event is counted by its reason, per destination, and ``status`` shows them."""

from __future__ import annotations

from tests.conftest import gravity_destination
from tests.test_cli import run
from tests.test_erase import drain_once, groups


def test_skips_are_counted_by_reason_and_shown_by_status(make_stack, sandbox, gravity):
    stack = make_stack(destinations={"gravity": gravity_destination(sandbox)})
    groups(stack, "gravity")
    stack.relay.enqueue(
        [
            {"event_name": "Search", "event_id": "s-1", "custom_data": {"search_string": "shoes"}},
            {"event_name": "Search", "event_id": "s-2", "custom_data": {"search_string": "socks"}},
            {"event_name": "Lead", "event_id": "l-1"},
        ]
    )
    drain_once(stack, "gravity")
    info = stack.admin.status()["gravity"]
    assert info["counters"]["skipped"] == 2 and info["counters"]["delivered"] == 1
    assert info["skipped_by_reason"] == {"skip_events": 2}
    shown = run(stack.env, "status")
    assert "  skipped: skip_events 2" in shown.stdout, shown.stdout
