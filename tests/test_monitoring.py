"""monitoring/: the alert rules pass promtool, fire when they should, and the dashboard and the
alerts only name metrics (and labels) that the exporter exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from govmilter.metrics import Metrics
from govmilter.model import Action

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "govmilter-dashboard.json"

NAME = re.compile(r"\b((?:govmilter|process)_[a-z0-9_]+)")
SELECTOR = re.compile(r"\b((?:govmilter|process)_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"""([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'[^']*')""")
# labels Prometheus adds to every series it scrapes, and the one of histogram buckets
TARGET_LABELS = {"instance", "job"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def promtool() -> str:
    path = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(path).exists():
        pytest.fail("promtool is not installed (Debian package prometheus; make test installs it)")
    return path


def catalog() -> dict[str, set[str]]:
    """Every series name the exporter can produce, with its label names."""
    metrics = Metrics()
    names: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        # prometheus_client keeps a counter's name without _total; _labelnames has no public getter
        base, kind, labels = value._name, value._type, set(value._labelnames)
        for suffix in SUFFIXES[kind]:
            names[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    for family in metrics.registry.collect():  # the process collector: no labels
        if family.name.startswith("process_"):
            for sample in family.samples:
                names.setdefault(sample.name, set())
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(data: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in data["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries() -> list[str]:
    data = dashboard()
    queries = [t["expr"] for p in panels(data) for t in p.get("targets", [])]
    for variable in data["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            queries.append(query["query"])
    return queries


def as_promql(query: str) -> str:
    """A Grafana query as plain PromQL: its variables replaced by what Grafana would put."""
    for variable, value in (
        ("$__rate_interval", "5m"),
        ("$__interval", "1m"),
        ("$__range", "6h"),
        ("$instance", ".*"),
    ):
        query = query.replace(variable, value)
    return query


SOURCES = {
    "dashboard": lambda: "\n".join(dashboard_queries()),
    "alerts": ALERTS.read_text,
    "alert tests": ALERT_TESTS.read_text,
}


# --- promtool ---------------------------------------------------------------------------------


def test_promtool_check_rules_passes() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_rules_fire_on_their_unit_tests() -> None:
    # as promtool documents it: from the directory of the test file, on the real rule file,
    # annotations (the wording the operators read) compared too
    result = subprocess.run(
        [promtool(), "test", "rules", ALERT_TESTS.name], capture_output=True, text=True, cwd=MONITORING
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    alerts = set(re.findall(r"- alert: (\w+)", ALERTS.read_text()))
    tested = ALERT_TESTS.read_text()
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tested))
    assert alerts == fired


def test_alerts_cover_what_the_operators_asked_for() -> None:
    alerts = set(re.findall(r"- alert: (\w+)", ALERTS.read_text()))
    for wanted in (
        "GovmilterClamdDown",
        "GovmilterNoClamd",
        "GovmilterTempfailsRising",
        "GovmilterRuleReloadFailed",
        "GovmilterSlowMessages",
        "GovmilterInternalErrors",
        "GovmilterRulesFallback",  # a broken rule directory at start: the last good rules serve
        "GovmilterDnsFailing",  # the resolver fails every check that asks DNS
        "GovmilterClamdSignaturesOld",
    ):
        assert wanted in alerts
    for block in re.split(r"\n\s+- alert: ", ALERTS.read_text())[1:]:
        assert re.search(r"severity: (critical|warning|info)", block), block.splitlines()[0]
        assert "summary:" in block and "description:" in block, block.splitlines()[0]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each dashboard query as the expression of a recording rule."""
    queries = [q for q in dashboard_queries() if not q.startswith("label_values(")]
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, query in enumerate(queries):
        lines += [f"      - record: dashboard:query_{number}", f"        expr: {json.dumps(as_promql(query))}"]
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


# --- the names used exist ---------------------------------------------------------------------


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_metric_named_is_exported(source: str) -> None:
    exported = catalog()
    used = set(NAME.findall(SOURCES[source]()))
    assert used, f"no metric found in the {source}"
    unknown = sorted(name for name in used if name not in exported)
    assert not unknown, f"{source} names metrics the exporter does not export: {unknown}"


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_label_matched_exists_on_its_metric(source: str) -> None:
    exported = catalog()
    actions = {a.value for a in Action}
    for name, matchers in SELECTOR.findall(SOURCES[source]()):
        for label, operator, value in MATCHER.findall(matchers):
            assert label in exported[name] | TARGET_LABELS, f"{source}: {name} has no label {label!r}"
            if label == "action" and operator == "=":
                assert value.strip("\"'") in actions, f"{source}: {name}{{action={value}}} is never exported"


def test_the_catalog_sees_what_a_scrape_shows() -> None:
    """The test's view of the exporter agrees with the real exposition text."""
    metrics = Metrics()
    metrics.messages.labels(action="accept", check="none").inc()
    metrics.message_duration.observe(0.003)
    metrics.clamd_up.labels(address="unix:/run/clamd.ctl").set(1)
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    exported = catalog()
    for sample in ("govmilter_messages_total", "govmilter_message_duration_seconds_bucket", "govmilter_clamd_up"):
        assert re.search(rf"^{sample}\{{", text, re.M) and sample in exported
    assert re.search(r"^process_cpu_seconds_total ", text, re.M)
    assert exported["govmilter_messages_total"] == {"action", "check"}


# --- the dashboard is usable -------------------------------------------------------------------


def test_dashboard_has_the_panels_an_operator_opens_first() -> None:
    data = dashboard()
    titles = {p["title"] for p in panels(data)}
    for wanted in (
        "Traffic by verdict",
        "Forwarding blocks by direction",
        "Viruses found",
        "Spam refused and tagged",
        "Milter time per message (p50, p99)",
        "clamd status",
        "Rule reloads",
    ):
        assert wanted in titles
    by_title = {p["title"]: p for p in panels(data)}
    latency = [t["expr"] for t in by_title["Milter time per message (p50, p99)"]["targets"]]
    assert any("histogram_quantile(0.50" in q for q in latency) and any("histogram_quantile(0.99" in q for q in latency)
    assert "by (direction" in by_title["Forwarding blocks by direction"]["targets"][0]["expr"]


def test_dashboard_panels_are_well_formed() -> None:
    data = dashboard()
    assert data["uid"] and data["title"] == "govmilter"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(data)]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(data):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel.get("description"), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            # every query follows the instance picker, so one node can be looked at alone
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])
            assert target["datasource"] == panel["datasource"]
