"""monitoring/: the alert rules pass promtool and fire on synthetic series exactly when they should; the
dashboard is a Grafana dashboard whose every query is PromQL promtool accepts; the rules and the dashboard
use only names a running gateway exports, the hub's names, and Prometheus' own ``up``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from govedge.tools.dev.broker import free_port
from support.rig import running  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "govedge-alerts.yml"
DASHBOARD = MONITORING / "govedge-dashboard.json"
RULE_TESTS = Path(__file__).parent / "alerts_test.yml"

# the names the hub's endpoint exports (govedge.hub): the hub panels and the silent-gateway alert use them
HUB_NAMES = {
    "govedge_hub_batches_stored_total", "govedge_hub_readings_stored_total", "govedge_hub_duplicates_total",
    "govedge_hub_rejected_total", "govedge_hub_gateway_last_heard_timestamp_seconds",
    "govedge_hub_gateway_unconfirmed_batches", "govedge_hub_gateway_oldest_unconfirmed_batch_timestamp_seconds",
    "govedge_hub_gateway_epochs_unanchored", "govedge_hub_gateway_store_free_bytes",
}
# Grafana's variables, as a Prometheus server would see them once Grafana has put them in
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "6h", "$instance": ".*", "$gateway": ".*"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd)


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    queries += [v["query"]["query"] for v in doc["templating"]["list"] if v["type"] == "query"]
    return queries


def grafana_to_promql(query: str) -> str:
    """A panel's query with Grafana's variables put in; a variable's label_values(SELECTOR, LABEL) as the
    selector Grafana asks Prometheus for."""
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return re.sub(r"^label_values\((.+),\s*\w+\)$", r"\1", query)


# -- the rules ---------------------------------------------------------------------------------------------

def test_the_alert_rules_pass_promtool_check_rules():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout


def test_the_example_prometheus_configurations_pass_promtool_check_config(tmp_path):
    central = promtool("check", "config", "prometheus.yml", cwd=MONITORING)  # its rule_files: the rules beside it
    assert central.returncode == 0, central.stdout + central.stderr
    assert "SUCCESS: 1 rule files found" in central.stdout
    agent = promtool("check", "config", "--agent", "prometheus-agent.yml", cwd=MONITORING)
    assert agent.returncode == 0, agent.stdout + agent.stderr


def test_every_alert_fires_on_the_series_that_should_fire_it_and_on_no_other(tmp_path):
    """promtool test rules on tests/monitoring/alerts_test.yml, beside the rules without their annotations
    (an alert's expression, `for` and labels decide whether it fires)."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "govedge-alerts.yml").write_text(yaml.safe_dump(doc))
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    tested = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_rule_tests_cover_every_alert_firing_and_beside_series_that_must_not_fire_it():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {}
    for case in tests:
        # who each series is: its instance (a gateway's endpoint) and its gateway (as the hub names it)
        series = {(m.get("instance"), m.get("gateway"))
                  for s in case["input_series"] for m in [dict(re.findall(r'(\w+)="([^"]*)"', s["series"]))]}
        for check in case["alert_rule_test"]:
            expected = {(a["exp_labels"].get("instance"), a["exp_labels"].get("gateway"))
                        for a in check["exp_alerts"]}
            if expected:
                fired.setdefault(check["alertname"], set()).update(series - expected)
    names = [rule["alert"] for rule in alerts()]
    assert sorted(fired) == sorted(names), "alerts without a test in which they fire"
    assert {name for name, silent in fired.items() if not silent} == set(), \
        "alerts tested with no series beside that must not fire them"


def test_a_rule_test_that_expects_the_wrong_alert_fails(tmp_path):
    """The tests above can fail: the same rules with a threshold moved make promtool report a failure."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
            if rule["alert"] == "GovedgeUnsentBatchOld":
                rule["expr"] = rule["expr"].replace("> 1800", "> 7200")
    (tmp_path / "govedge-alerts.yml").write_text(yaml.safe_dump(doc))
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    tested = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "alertname: GovedgeUnsentBatchOld" in tested.stdout + tested.stderr


# -- the dashboard -------------------------------------------------------------------------------------------

def test_the_dashboard_is_a_grafana_dashboard_with_a_query_in_every_panel():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and isinstance(doc["schemaVersion"], int)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) > 15
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "instance", "gateway"} <= variables
    for panel in doc["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        for target in panel["targets"]:
            assert set(re.findall(r"\$\{?(\w+)", target["expr"])) <= variables | {"__rate_interval", "__range"}
    titles = " ".join(p["title"].lower() for p in doc["panels"])
    for wanted in ("readings per second", "quarantine by code", "oldest unsent batch", "epochs not on the chain",
                   "disk", "uplink", "clock", "faults", "hub"):
        assert wanted in titles, wanted


def test_every_dashboard_query_is_promql_that_promtool_accepts(tmp_path):
    queries = dashboard_queries()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(q)} for i, q in enumerate(queries)]}]}
    (tmp_path / "dashboard-queries.yml").write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(tmp_path / "dashboard-queries.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(queries)} rules found" in checked.stdout


# -- names ---------------------------------------------------------------------------------------------------

def names_used(text: str) -> set[str]:
    return set(re.findall(r"\b(govedge_[a-z0-9_]+|up)\b(?=\s*[{\[)\s,]|$)", text))


def test_the_rules_and_the_dashboard_use_only_what_a_running_gateway_and_the_hub_export(running):
    port = free_port()
    running(metrics_port=port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    exported = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    used = set()
    for rule in alerts():
        used |= names_used(rule["expr"])
    for query in dashboard_queries():
        used |= names_used(query)
    assert {"govedge_quarantined_total", "govedge_hub_gateway_last_heard_timestamp_seconds", "up"} <= used
    assert sorted(used - exported - HUB_NAMES - {"up"}) == []
    # and every hub name is shown somewhere: the dashboard's hub panels
    assert sorted(HUB_NAMES - used) == []
