"""deploy/prometheus/flexsf-alerts.yml: every rule is complete, and names only metrics and label values the code
records, so a renamed metric or outcome cannot leave an alert that silently never fires."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "flexsf-alerts.yml"
# Where metrics are defined: the activities' and runtime meter's names, the workflow's counters, the gateway's.
SOURCES = ("flexsf/metrics.py", "workflows/task_workflow.py", "gateway/routes/metrics.py")
# Prometheus's own series, recorded by the scrape rather than by our code.
SCRAPE_SERIES = {"up"}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "rate", "irate", "increase", "clamp_min", "clamp_max", "absent", "offset", "bool",
    "topk", "bottomk", "time", "absent_over_time",
}  # fmt: skip
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def defined_metrics() -> set[str]:
    """Every series name the code exports, read out of its source as a reviewer would find it."""
    names: set[str] = set()
    for relative in SOURCES:
        text = (ROOT / relative).read_text(encoding="utf-8")
        # Temporal meters: the name is exported as written (counters already end in _total).
        names |= set(re.findall(r'"(flexsf_[a-z0-9_]+)"', text))
        # prometheus_client adds the suffixes itself.
        for name in re.findall(r'\bCounter\(\s*"([a-z0-9_]+)"', text):
            names.add(f"{name}_total")
        for name in re.findall(r'\bHistogram\(\s*"([a-z0-9_]+)"', text):
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def label_values() -> set[str]:
    """Every string literal of the defining modules and the vocabulary they record labels from."""
    values: set[str] = set()
    for relative in (*SOURCES, "flexsf/vocabulary.py", "activities/salesforce.py"):
        path = ROOT / relative
        if path.is_file():
            values |= set(re.findall(r'"([a-z_]+)"', path.read_text(encoding="utf-8")))
    return values


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    found = [rule for group in document["groups"] for rule in group["rules"]]
    assert found, "no rules"
    return found


def metrics_in(expr: str) -> set[str]:
    # Label matchers, ranges and strings name no series.
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", bare)
    return {word for word in _IDENT.findall(bare) if word not in PROMQL_WORDS and not re.fullmatch(r"[0-9.e]+", word)}


def test_the_metric_names_come_out_of_the_code() -> None:
    names = defined_metrics()
    # A few from each source, so an empty or broken extraction cannot pass the check below.
    assert {"flexsf_salesforce_task_writes_total", "flexsf_salesforce_api_usage"} <= names
    assert {"flexsf_activity_logs_total", "flexsf_taskrouter_events_total"} <= names


def test_metrics_in_reads_series_names_out_of_an_expression() -> None:
    expr = 'sum by (outcome) (increase(flexsf_x_total{outcome=~"a|b"}[10m])) / max(other_metric) > 0.9'
    assert metrics_in(expr) == {"flexsf_x_total", "other_metric"}


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_each_rule_names_only_metrics_and_label_values_the_code_records(rule: dict) -> None:
    expr = rule["expr"]
    unknown = metrics_in(expr) - defined_metrics() - SCRAPE_SERIES
    assert not unknown, f"{rule['alert']} names metrics no code records: {sorted(unknown)}"
    known_values = label_values()
    for metric, matchers in _SELECTOR.findall(expr):
        if metric in SCRAPE_SERIES:
            continue
        for label, _, value in _MATCHER.findall(matchers):
            missing = {v for v in value.split("|") if v not in known_values}
            assert not missing, f"{rule['alert']}: {metric}{{{label}}} is never {sorted(missing)}"


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_each_rule_has_a_duration_a_severity_and_a_summary(rule: dict) -> None:
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), rule["alert"]
    assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, rule["alert"]
    assert rule.get("annotations", {}).get("summary"), rule["alert"]


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))


def test_the_sweep_and_repairable_tasks_are_alerted_on() -> None:
    """Issue 13: an alert for tasks parked in a repairable stage, for the sweep recovering tasks (callbacks are being
    lost), and for the sweep not succeeding."""
    by_name = {rule["alert"]: rule["expr"] for rule in rules()}
    assert "flexsf_tasks_repairable" in metrics_in(by_name["FlexsfTasksRepairable"])
    assert "flexsf_sweep_recoveries_total" in metrics_in(by_name["FlexsfSweepRecoveringTasks"])
    assert "flexsf_sweep_last_success_timestamp_seconds" in metrics_in(by_name["FlexsfSweepNotRunning"])


def test_metrics_in_leaves_out_grouping_and_functions() -> None:
    expr = "max by (q) (a and on (instance, q) topk by (q) (1, b)) > 0 or absent_over_time(b[15m])"
    assert metrics_in(expr) == {"a", "b"}
    assert metrics_in("(time() - max(c)) > 900") == {"c"}
