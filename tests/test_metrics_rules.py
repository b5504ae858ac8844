"""deploy/prometheus and deploy/grafana: the rules parse, and every metric the rules and the
dashboard query is one the relay really exports (names from a real scrape, not a list)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conversion_relay.ops.metrics import metrics_text
from tests.conftest import FAST_RELAY, Stack, gravity_destination

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "conversion-relay-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "conversion-relay-dashboard.json"
METRIC = re.compile(r"\bconversion_relay_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, redis_server, sandbox) -> set[str]:
    """Every sample name a scrape of a real (empty) relay can hold."""
    stack = Stack(
        redis_server, tmp_path_factory.mktemp("rules"), dict(FAST_RELAY), {"gravity": gravity_destination(sandbox)}
    )
    try:
        stack.reset_data()
        families = list(text_string_to_metric_families(metrics_text(stack.settings, stack.redis).decode()))
    finally:
        stack.close()
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def unknown(expressions: list[str], exported: set[str]) -> set[str]:
    return {name for expr in expressions for name in METRIC.findall(expr)} - exported


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    document = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in document["panels"] for target in panel["targets"]]
    exprs += [v["definition"] for v in document["templating"]["list"] if v.get("definition")]
    return exprs


def test_the_scrape_holds_the_metrics_the_issue_names(exported):
    assert {
        "conversion_relay_events_total",
        "conversion_relay_skipped_events_total",
        "conversion_relay_dead_lettered_events_total",
        "conversion_relay_backlog_events",
        "conversion_relay_oldest_undelivered_age_seconds",
        "conversion_relay_request_duration_seconds_bucket",
        "conversion_relay_batch_size_events_count",
        "conversion_relay_backing_off",
        "conversion_relay_last_success_timestamp_seconds",
        "conversion_relay_workers",
    } <= exported


def test_the_check_finds_a_metric_the_relay_does_not_export(exported):
    assert unknown(["rate(conversion_relay_events_total[5m]) + conversion_relay_nope"], exported) == {
        "conversion_relay_nope"
    }


def test_the_rules_alert_on_lag_dead_letters_stalls_and_no_worker(exported):
    found = rules()
    names = {rule["alert"] for rule in found}
    assert {
        "ConversionRelayLagHigh",
        "ConversionRelayDeadLetters",
        "ConversionRelayDestinationStalled",
        "ConversionRelayNoWorker",
    } <= names
    for rule in found:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert METRIC.search(rule["expr"]), rule["alert"]
    assert unknown([rule["expr"] for rule in found], exported) == set()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus package) is not installed")
def test_promtool_accepts_the_rules():
    done = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_queries_only_exported_metrics(exported):
    document = json.loads(DASHBOARD.read_text())
    assert document["uid"] == "conversion-relay"
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    exprs = dashboard_expressions()
    assert all(METRIC.search(expr) for expr in exprs)
    assert unknown(exprs, exported) == set()
    queried = {name for expr in exprs for name in METRIC.findall(expr)}
    assert "conversion_relay_oldest_undelivered_age_seconds" in queried
