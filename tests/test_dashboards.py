"""The Grafana dashboard and the chat HPA reference only metrics the code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import agentmesh.agents.knowledge.metrics
import agentmesh.chat.metrics
import agentmesh.gateway.metrics
import agentmesh.shared.events.metrics
import agentmesh.shared.metrics  # noqa: F401 - registers the shared metrics

ROOT = Path(__file__).resolve().parents[1]
PROMQL_WORDS = {"sum", "by", "rate", "max", "histogram_quantile", "le", "irate", "avg"}


def exported() -> set[str]:
    """Every series name the registry can produce, labelled metrics with no series yet
    included (their names follow from the metric's type)."""
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
    return names


def metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|by \([^)]*\)", " ", expr)
    return {
        word
        for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_labels)
        if word not in PROMQL_WORDS and "_" in word
    }


def test_every_dashboard_query_uses_exported_metrics():
    dashboard = json.loads((ROOT / "deploy/grafana/agentmesh.json").read_text())
    names = exported()
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in metric_names(target["expr"])
    }
    assert used, "the dashboard queries nothing"
    missing = {name for name in used if name not in names}
    assert not missing, f"the dashboard names metrics the code does not export: {missing}"


def test_the_check_can_fail():
    assert metric_names("sum(rate(agentmesh_no_such_metric_total[5m]))") - exported()


def test_the_chat_hpa_scales_on_an_exported_metric():
    hpa = yaml.safe_load((ROOT / "deploy/k8s/examples/chat-streams/chat-hpa.yaml").read_text())
    pods = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods == ["agentmesh_chat_active_streams"]
    assert set(pods) <= exported()
