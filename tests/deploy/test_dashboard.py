"""The Grafana dashboard, the Prometheus rules and the PromQL of docs/observability.md query what the code exports.

Every PromQL expression is read from `deploy/grafana/credits-dashboard.json` (every panel's targets, rows
included), `deploy/prometheus/credits-rules.yml` and the ```promql blocks of docs/observability.md. Each metric
name in it (histogram suffixes `_bucket`, `_sum`, `_count` stripped) must be exported by the services'
metric modules, as prometheus_client's default registry describes them (the ledger's pool collector
included); each label it matches on must be one of the metric's labels; each `le` it names must be a bucket
of the histogram. Recorded series (`a:b:c`) must be recorded by the rules file. When `promtool` is installed,
the rules are also checked and unit-tested, and every dashboard and documentation expression is parsed by
Prometheus's own parser.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; types-PyYAML is not a dependency.
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "credits-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "credits-rules.yml"
RULES_TESTS = ROOT / "deploy" / "prometheus" / "credits-rules.test.yml"
OBSERVABILITY_DOC = ROOT / "docs" / "observability.md"

# Every module that defines metrics; importing them registers the metrics in the default registry.
METRIC_MODULES = (
    "services.common.metrics",
    "services.stripe_bridge.apply",
    "services.ledger.metrics",
    "services.webhook_gateway.metrics",
    "services.webhook_gateway.ratelimit",
    "services.reconciler.metrics",
)
# Added by Prometheus itself, not by the services.
SCRAPE_METRICS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
TARGET_LABELS = frozenset({"job", "instance"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}

PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
)
PROMQL_CONSTANTS = frozenset({"inf", "nan", "Inf", "NaN"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"(?P<metric>[A-Za-z_:][A-Za-z0-9_:]*)?\s*\{(?P<matchers>(?:[^{}\"]|\"(?:[^\"\\]|\\.)*\")*)\}")
_MATCHER = re.compile(r'(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")


# --- reading PromQL -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords, labels and durations excluded)."""
    text = _SELECTOR.sub(lambda match: match.group("metric") or "", expr)  # Matchers hold label names.
    text = _STRING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        following = text[match.end() :].lstrip()
        if following.startswith("("):  # A function or an aggregation.
            continue
        if name in PROMQL_KEYWORDS or name in PROMQL_CONSTANTS:
            continue
        names.add(name)
    return names


def selectors(expr: str) -> list[Selector]:
    """Every `metric{matchers}` of an expression (a bare `{...}` selector names its metric in __name__)."""
    found = []
    for match in _SELECTOR.finditer(expr):
        matchers = tuple(
            (item.group("label"), item.group("op"), item.group("value"))
            for item in _MATCHER.finditer(match.group("matchers"))
        )
        found.append(Selector(match.group("metric") or "", matchers))
    return found


def family_name(metric: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix):
            return metric[: -len(suffix)]
    return metric


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        pytest.param("up", {"up"}, id="bare"),
        pytest.param('sum by (kind) (rate(a_total{kind="x"}[5m]))', {"a_total"}, id="aggregation"),
        pytest.param(
            "histogram_quantile(0.99, sum by (method, le) (rate(h_seconds_bucket[$__rate_interval])))",
            {"h_seconds_bucket"},
            id="quantile",
        ),
        pytest.param("a / ignoring (code) group_left sum by (method) (b)", {"a", "b"}, id="vector-matching"),
        pytest.param("time() - max(g > 0) > 26 * 3600", {"g"}, id="time-and-numbers"),
        pytest.param('x{route=~"/a|/b"} or absent(y)', {"x", "y"}, id="regex-and-absent"),
        pytest.param("rec:errors:ratio_rate1h > (14.4 * 0.001)", {"rec:errors:ratio_rate1h"}, id="recorded"),
        pytest.param("1e-3 * c offset 5m", {"c"}, id="scientific-and-offset"),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_selectors_are_read_with_their_matchers() -> None:
    (found,) = selectors('rate(m_bucket{le="30.0", outcome!="failed"}[5m])')
    assert found == Selector("m_bucket", (("le", "=", "30.0"), ("outcome", "!=", "failed")))


# --- what the code exports ------------------------------------------------------------------------


@dataclass
class Exported:
    """Metric name -> its labels (None when unknown); histograms -> their bucket bounds, as exposed."""

    labels: dict[str, set[str] | None] = field(default_factory=dict)
    buckets: dict[str, set[str]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, kind: str, labels: set[str] | None) -> None:
        self.kinds[name] = kind
        known = self.labels.get(name)
        self.labels[name] = labels if known is None else known | (labels or set())


def _declared_labels() -> dict[str, set[str]]:
    """Label names of the metric objects the modules declare (known even before any series exists)."""
    declared: dict[str, set[str]] = {}
    for module_name in METRIC_MODULES:
        for value in vars(importlib.import_module(module_name)).values():
            if isinstance(value, MetricWrapperBase):
                declared[value._name] = set(value._labelnames)
    return declared


def _collected_names(kind: str, name: str) -> list[str]:
    if kind == "counter":
        return [f"{name}_total"]
    return [name]


@pytest.fixture(scope="module")
def exported() -> Exported:
    declared = _declared_labels()
    catalog = Exported()
    importlib.import_module("services.ledger.metrics")  # its metrics register when it is imported
    families = list(REGISTRY.collect())
    for family in families:
        for name in _collected_names(family.type, family.name):
            labels = set(getattr(family, "_labelnames", ())) | declared.get(family.name, set())
            labels |= {key for sample in family.samples for key in sample.labels if key != "le"}
            catalog.add(name, family.type, labels)
        if family.type == "histogram":
            bounds = {sample.labels["le"] for sample in family.samples if sample.name.endswith("_bucket")}
            catalog.buckets.setdefault(family.name, set()).update(bounds)
    return catalog


# --- the expressions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    where: str
    expr: str


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def dashboard_queries() -> list[Query]:
    queries = []
    for panel in _panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            queries.append(Query(f"dashboard panel {panel['title']!r} target {target['refId']}", target["expr"]))
    return queries


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def rules_queries() -> list[Query]:
    return [Query(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]) for rule in rules()]


def doc_queries() -> list[Query]:
    blocks = re.findall(r"```promql\n(.*?)```", OBSERVABILITY_DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [Query(f"docs/observability.md promql block {number}", block) for number, block in enumerate(blocks, 1)]


def all_queries() -> list[Query]:
    return dashboard_queries() + rules_queries() + doc_queries()


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


# --- the checks ---------------------------------------------------------------------------------


def problems(queries: list[Query], exported: Exported) -> list[str]:
    """Everything a query names that the code does not export: metric names, labels, buckets."""
    found = []
    recorded = recorded_names()
    for query in queries:
        for name in sorted(metric_names(query.expr)):
            if ":" in name:
                if name not in recorded:
                    found.append(f"{query.where}: {name} is not recorded by {RULES.name}")
            elif (
                name not in SCRAPE_METRICS and family_name(name) not in exported.labels and name not in exported.labels
            ):
                found.append(f"{query.where}: {name} is not exported")
        for selector in selectors(query.expr):
            found.extend(_selector_problems(query, selector, exported))
    return found


def _selector_problems(query: Query, selector: Selector, exported: Exported) -> list[str]:
    name = family_name(selector.metric)
    known = exported.labels.get(name, exported.labels.get(selector.metric))
    if known is None or selector.metric in SCRAPE_METRICS:
        return []
    found = []
    allowed = known | TARGET_LABELS | ({"le"} if selector.metric.endswith("_bucket") else set())
    for label, operator, value in selector.matchers:
        if label not in allowed:
            found.append(f"{query.where}: {selector.metric} has no label {label!r} ({sorted(known)})")
        elif label == "le" and operator == "=" and value not in exported.buckets.get(name, set()):
            found.append(f"{query.where}: {selector.metric} has no bucket le={value!r}")
    return found


def test_every_query_names_what_the_code_exports(exported: Exported) -> None:
    assert problems(all_queries(), exported) == []


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param("rate(webhook_event_total[5m])", id="misspelled-metric"),
        pytest.param('rate(webhook_events_total{outcomes="failed"}[5m])', id="misspelled-label"),
        pytest.param('rate(webhook_processing_seconds_bucket{le="30"}[5m])', id="bucket-not-as-exposed"),
        pytest.param('rate(webhook_processing_seconds_bucket{le="45.0"}[5m])', id="no-such-bucket"),
        pytest.param("webhook:slo_errors:ratio_rate2h > 0", id="not-recorded"),
        pytest.param('sum(ledger_db_pool_connections{status="idle"})', id="collector-label"),
    ],
)
def test_a_query_of_something_not_exported_is_caught(exported: Exported, expr: str) -> None:
    assert len(problems([Query("test", expr)], exported)) == 1


def test_the_slo_is_queried_on_the_30_second_bucket_of_good_outcomes() -> None:
    slo = [
        query
        for query in all_queries()
        if "webhook_processing_seconds_bucket" in query.expr and "webhook_processing_seconds_count" in query.expr
    ]
    assert len(slo) >= 5, "the SLO's ratio: dashboard, recording rules, docs"
    for query in slo:
        assert 'le="30.0"' in query.expr, query.where
        assert 'outcome!="failed"' in query.expr, query.where


def test_the_dashboard_has_the_panels_on_call_needs() -> None:
    titles = " | ".join(panel["title"].lower() for panel in _panels(dashboard()["panels"]))
    for wanted in (
        "webhook outcomes by type",
        "webhook latency p50 / p99",
        "error budget remaining",
        "slo burn rate",
        "credits flow by direction and kind",
        "credits granted / spent / expired by category",
        "last grant expiry sweep",
        "drift found and repaired by kind",
        "last successful run",
        "rpc error ratio by method and code",
        "rpc latency p99",
        "database pool",
    ):
        assert wanted in titles, wanted


def test_the_grant_panel_shows_every_category_and_movement() -> None:
    panels = _panels(dashboard()["panels"])
    (panel,) = [panel for panel in panels if panel["title"].lower().startswith("credits granted")]
    grants, purchases = panel["targets"]
    assert "ledger_grant_credits_total" in grants["expr"]
    assert "by (category, movement)" in grants["expr"], "no category or movement may be summed away or filtered"
    assert selectors(grants["expr"]) == [], "no matcher filters a category or movement out"
    assert "{{category}}" in grants["legendFormat"] and "{{movement}}" in grants["legendFormat"]
    # Purchases are paid grants the grant counter leaves to ledger_credits_total (services/ledger/metrics.py).
    (selector,) = selectors(purchases["expr"])
    assert selector == Selector("ledger_credits_total", (("direction", "=", "issued"), ("kind", "=", "purchase")))


def test_a_failing_grant_sweep_alerts() -> None:
    """Both ways a sweeper fails have an alert: no success for 5 minutes while a ledger is up, failures rising."""
    by_name = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    stale = by_name["LedgerGrantSweepStale"]
    assert "ledger_grant_sweep_last_success_timestamp_seconds" in stale["expr"]
    assert "> 300" in stale["expr"], "five minutes"
    assert 'up{job="ledger"}' in stale["expr"], "only while a ledger is up (LedgerDown covers the rest)"
    failing = by_name["LedgerGrantSweepFailures"]
    assert 'ledger_grant_sweeps_total{outcome="failed"}' in failing["expr"]
    for rule in (stale, failing):
        assert rule["annotations"]["runbook"] == "docs/operations.md#grant-sweep-failing"


def test_the_dashboard_uses_its_prometheus_data_source_variable() -> None:
    board = dashboard()
    (variable,) = [item for item in board["templating"]["list"] if item["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    ids = []
    for panel in _panels(board["panels"]):
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
        position = panel["gridPos"]
        assert position["x"] >= 0 and position["x"] + position["w"] <= 24, panel["title"]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_a_metric_the_code_does_not_export_is_caught(exported: Exported) -> None:
    """The check has teeth: a misspelled name, label or bucket is found."""
    for expr, problem in (
        ("rate(webhook_event_total[5m])", "name"),
        ('rate(webhook_events_total{outcomes="failed"}[5m])', "label"),
        ('rate(webhook_processing_seconds_bucket{le="30"}[5m])', "bucket"),
    ):
        (selector,) = selectors(expr) or [Selector(next(iter(metric_names(expr))), ())]
        name = family_name(selector.metric)
        if problem == "name":
            assert name not in exported.labels and selector.metric not in exported.labels
        elif problem == "label":
            assert "outcomes" not in (exported.labels[selector.metric] or set())
        else:
            assert "30" not in exported.buckets[name]


# --- promtool, when installed -----------------------------------------------------------------------


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def _promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *arguments], capture_output=True, text=True, timeout=120, check=False)


@needs_promtool
def test_the_rules_pass_promtool_check() -> None:
    checked = _promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_the_rules_unit_tests_pass() -> None:
    tested = _promtool("test", "rules", str(RULES_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_dashboard_and_doc_expressions_parse(tmp_path: Path) -> None:
    """Prometheus's parser reads each expression, as a recording rule of a throwaway rules file."""
    records = []
    for number, query in enumerate(dashboard_queries() + doc_queries()):
        expr = query.expr
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        records.append({"record": f"check:query:{number}", "expr": expr})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": records}]}), encoding="utf-8")
    checked = _promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
