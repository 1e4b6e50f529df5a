"""The Grafana dashboard is provisioned by docker-compose and its Prometheus panels ask for
metrics devtrail exports, with labels those metrics have.

The PostgreSQL panels are executed against a migrated database in
``tests/integration/test_grafana_dashboard.py``."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import yaml  # type: ignore[import-untyped]  # types-PyYAML is not a dev dependency
from prometheus_client.metrics import MetricWrapperBase

from devtrail.consumers import metrics
from devtrail.http import WorkerCollector
from devtrail.lag import LagCollector, LagMonitor, PartitionLag
from devtrail.settings import StackSettings

if TYPE_CHECKING:
    from devtrail.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "devtrail.json"

#: Series Prometheus records itself for every scrape target, with the target's labels.
SCRAPE_SERIES = {"up": frozenset({"job", "instance"})}
#: Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = frozenset({"job", "instance"})
#: The series each metric type exposes: ``name`` plus each suffix.
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
PROMQL_FUNCTIONS = frozenset(
    {
        # aggregation operators
        *("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"),
        *("bottomk", "topk", "quantile", "limitk", "limit_ratio"),
        # functions
        *("abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min"),
        *("delta", "deriv", "exp", "floor", "histogram_quantile", "histogram_count", "histogram_sum"),
        *("histogram_fraction", "idelta", "increase", "irate", "label_join", "label_replace", "ln"),
        *("log2", "log10", "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort"),
        *("sort_desc", "sqrt", "time", "timestamp", "vector", "avg_over_time", "min_over_time"),
        *("max_over_time", "sum_over_time", "count_over_time", "quantile_over_time", "last_over_time"),
        *("present_over_time", "stddev_over_time", "stdvar_over_time"),
    }
)
PROMQL_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool"})
PROMQL_KEYWORDS |= frozenset({"and", "or", "unless", "offset", "atan2", "inf", "nan"})

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
MATCHERS = re.compile(r"\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
RANGE = re.compile(r"\[[^\]]*\]")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
IDENTIFIER = re.compile(r"(?<![\w.$:])([a-zA-Z_:][\w:]*)(\s*\()?")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@cache
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    """Every panel but the rows, those inside collapsed rows included."""
    found = []
    for panel in dashboard()["panels"]:
        found.extend(panel.get("panels", []))
        if panel["type"] != "row":
            found.append(panel)
    return found


def datasources() -> dict[str, dict[str, Any]]:
    """The provisioned data sources by uid."""
    by_uid: dict[str, dict[str, Any]] = {}
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml")):
        for source in load_yaml(path)["datasources"]:
            assert source["uid"] not in by_uid, source["uid"]
            by_uid[source["uid"]] = source
    return by_uid


def targets_of(kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every panel target whose data source is of type ``kind``."""
    sources = datasources()
    return [
        (panel["title"], target)
        for panel in panels()
        for target in panel["targets"]
        if sources[target["datasource"]["uid"]]["type"] == kind
    ]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(ROOT / "docker-compose.yml")
    return loaded


def _stub_stack() -> Stack:
    worker = SimpleNamespace(name="sink-1", role="sink", restarts=0, alive=True)
    return cast("Stack", SimpleNamespace(workers=[worker]))


@cache
def exported_series() -> dict[str, frozenset[str]]:
    """Every series name devtrail's ``/metrics`` can show, with its label names: the metrics of
    ``devtrail.consumers.metrics`` and the supervisor's collectors (fed one reading so their labels show)."""
    wrappers = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    families = {m._name: (str(m._type), frozenset(m._labelnames)) for m in wrappers}
    monitor = LagMonitor(StackSettings(), [], interval_s=1)
    monitor.readings = [PartitionLag("g", "t", 0, end_offset=1, next_offset=0)]
    for family in (*WorkerCollector(_stub_stack()).collect(), *LagCollector(monitor).collect()):
        families[family.name] = (str(family.type), frozenset(k for s in family.samples for k in s.labels))
    series = dict(SCRAPE_SERIES)
    for name, (kind, labels) in families.items():
        for suffix in SUFFIXES[kind]:
            series[name + suffix] = labels | TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
    return series


def promql_names(expr: str) -> tuple[set[str], set[str], set[str]]:
    """The metric names, functions and label names a PromQL expression uses."""
    labels: set[str] = set()
    expr = STRING.sub('""', expr)
    for block in MATCHERS.findall(expr):
        labels.update(MATCHER_LABEL.findall(block))
    expr = RANGE.sub(" ", MATCHERS.sub(" ", expr))
    for group in GROUPING.findall(expr):
        labels.update(name.strip() for name in group.split(",") if name.strip())
    expr = GROUPING.sub(" ", expr)
    names, functions = set(), set()
    for name, call in IDENTIFIER.findall(expr):
        if call:
            functions.add(name)
        elif name not in PROMQL_KEYWORDS:
            names.add(name)
    return names, functions, labels


def test_the_promql_reader_finds_metrics_functions_and_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (stage, le) (rate(devtrail_flush_seconds_bucket{path=~"a|b"}[5m])))'
        " / on (stage) group_left devtrail_worker_up > 1e3 and time() - up offset 1h"
    )
    names, functions, labels = promql_names(expr)
    assert names == {"devtrail_flush_seconds_bucket", "devtrail_worker_up", "up"}
    assert functions == {"histogram_quantile", "sum", "rate", "time"}
    assert labels == {"stage", "le", "path"}


def test_every_panel_names_a_provisioned_data_source() -> None:
    sources = datasources()
    assert {s["type"] for s in sources.values()} == {"prometheus", "grafana-postgresql-datasource"}
    assert len(panels()) >= 20
    for panel in panels():
        assert panel["targets"], panel["title"]
        for target in [panel, *panel["targets"]]:
            uid = target["datasource"]["uid"]
            assert uid in sources, (panel["title"], uid)
            assert target["datasource"]["type"] == sources[uid]["type"], panel["title"]
    for variable in dashboard()["templating"]["list"]:
        assert variable["datasource"]["uid"] in sources, variable["name"]


def test_panel_ids_are_unique_and_each_row_holds_one_kind_of_source() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    rows: dict[str, set[str]] = {}
    current = ""
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            continue
        rows.setdefault(current, set()).add(panel["datasource"]["type"])
    assert rows == {"Pipeline health": {"prometheus"}, "Analytics": {"grafana-postgresql-datasource"}}


def test_the_postgres_source_is_the_compose_database() -> None:
    (source,) = [s for s in datasources().values() if s["type"] == "grafana-postgresql-datasource"]
    database = compose()["services"]["timescaledb"]
    host, port = source["url"].split(":")
    assert host == "timescaledb" and port == "5432"
    assert source["user"] == database["environment"]["POSTGRES_USER"]
    assert source["secureJsonData"]["password"] == database["environment"]["POSTGRES_PASSWORD"]
    assert source["jsonData"]["database"] == database["environment"]["POSTGRES_DB"]
    (prometheus,) = [s for s in datasources().values() if s["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090"
    assert "prometheus" in compose()["services"]


def test_compose_mounts_the_provisioning_and_the_dashboards_the_provider_reads() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "devtrail.yml")["providers"]
    assert provider["type"] == "file"
    host_dirs = [host for host, container in mounts.items() if container == provider["options"]["path"]]
    assert host_dirs == ["./deploy/grafana/dashboards"]
    assert (ROOT / host_dirs[0] / DASHBOARD.name).is_file()


def test_every_prometheus_query_asks_for_metrics_and_labels_devtrail_exports() -> None:
    series = exported_series()
    assert {"devtrail_events_in_total", "devtrail_flush_seconds_bucket", "devtrail_consumer_lag"} <= set(series)
    jobs = {job["job_name"] for job in load_yaml(ROOT / "deploy" / "prometheus" / "prometheus.yml")["scrape_configs"]}
    targets = targets_of("prometheus")
    assert len(targets) >= 10
    for title, target in targets:
        names, functions, labels = promql_names(target["expr"])
        assert names, (title, "names no metric")
        assert names <= set(series), (title, names - set(series))
        assert functions <= PROMQL_FUNCTIONS, (title, functions - PROMQL_FUNCTIONS)
        known = frozenset().union(*(series[name] for name in names))
        assert labels <= known, (title, labels - known)
        assert set(re.findall(r'job="([^"]*)"', target["expr"])) <= jobs, title
        for legend_label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
            assert legend_label in labels, (title, legend_label)


def test_the_project_variable_is_defined_and_every_analytics_panel_can_use_it() -> None:
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "project"]
    assert variable["type"] == "query" and "analytics." in variable["query"]
    # The custom "All" value is inserted unquoted: the panels test for it literally.
    assert variable["includeAll"] and variable["allValue"] == "'__all'"
    for title, target in targets_of("grafana-postgresql-datasource"):
        sql = target["rawSql"]
        assert "$project" not in sql or "'__all' IN ($project)" in sql, title
