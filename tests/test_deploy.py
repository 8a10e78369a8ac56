"""The Prometheus rules and the Grafana dashboard under deploy/: valid, and built only on
metrics a live gateway exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.api.test_files import upload
from tests.conftest import Gateway

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yaml"
DASHBOARD = DEPLOY / "grafana" / "filegate.json"
KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset"}
)
SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=120, check=False)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels left out)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", variable["query"]))
    return exprs


def exposed_names(text: str) -> set[str]:
    """Every series name in a text exposition, histogram and summary series included."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind in ("histogram", "summary"):
                names.update(name + suffix for suffix in SERIES_SUFFIXES)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in checked.stdout


def test_the_alerts_fire_as_their_unit_tests_expect() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_metric_names_are_parsed_out_of_promql() -> None:
    expr = (
        'sum by (le, handler) (rate(http_request_duration_seconds_bucket{status=~"5.."}[5m]))'
        " / on (job) group_left max without (instance) (filegate_jobs offset 1h) > bool 0"
    )
    assert metric_names(expr) == {"http_request_duration_seconds_bucket", "filegate_jobs"}


async def test_every_metric_the_dashboard_and_rules_use_is_exposed(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    assert (await upload(client)).status_code == 200
    async with gateway.client() as anonymous:
        assert (await anonymous.get("/v1/files")).status_code == 401
        exposed = exposed_names((await anonymous.get("/metrics")).text)
    used = {
        name for expr in rule_expressions() + dashboard_expressions() for name in metric_names(expr)
    }
    assert {"filegate_breaker_state", "http_requests_total"} <= used
    assert sorted(used - exposed) == []
