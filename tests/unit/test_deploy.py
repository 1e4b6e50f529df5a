"""The deployment files parse and agree with what devtrail serves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from devtrail.consumers import metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def worker_containers() -> list[dict[str, Any]]:
    docs = load_all(DEPLOY / "kubernetes" / "devtrail.yaml")
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {
        "devtrail-processor",
        "devtrail-sink",
        "devtrail-writers",
        "devtrail-dead-letters",
    }
    return [c for d in deployments for c in d["spec"]["template"]["spec"]["containers"]]


def test_every_worker_pod_is_probed_on_its_metrics_port() -> None:
    for container in worker_containers():
        assert container["args"][0] == "run"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == 9464
        liveness = container["livenessProbe"]["httpGet"]
        readiness = container["readinessProbe"]["httpGet"]
        assert (liveness["path"], liveness["port"]) == ("/livez", "metrics"), container["name"]
        assert (readiness["path"], readiness["port"]) == ("/readyz", "metrics"), container["name"]


def test_kubernetes_workers_listen_beyond_loopback_on_the_probed_port() -> None:
    (config,) = [d for d in load_all(DEPLOY / "kubernetes" / "devtrail.yaml") if d["kind"] == "ConfigMap"]
    assert config["data"]["DEVTRAIL_METRICS_HOST"] == "0.0.0.0"
    assert config["data"]["DEVTRAIL_METRICS_PORT"] == "9464"
    for container in worker_containers():
        assert {"configMapRef": {"name": "devtrail"}} in container["envFrom"]


def test_the_image_and_compose_listen_beyond_loopback() -> None:
    assert "ENV DEVTRAIL_METRICS_HOST=0.0.0.0" in (DEPLOY / "Dockerfile").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    devtrail = compose["services"]["devtrail"]
    assert devtrail["environment"]["DEVTRAIL_METRICS_HOST"] == "0.0.0.0"
    assert "/healthz" in " ".join(devtrail["healthcheck"]["test"])
    assert devtrail["ports"] == ["127.0.0.1:9464:9464"]


def exported_names() -> set[str]:
    names = {m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    return names | {"devtrail_consumer_lag", "devtrail_worker_restarts", "devtrail_worker_up"}


def test_alerts_load_and_use_only_metrics_devtrail_exports() -> None:
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["alerts.yml"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mount = "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro"
    assert mount in compose["services"]["prometheus"]["volumes"]
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules
    known = exported_names()
    for rule in rules:
        used = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in re.findall(r"devtrail_[a-z_]+", rule["expr"])}
        assert used <= known, (rule["alert"], used - known)
