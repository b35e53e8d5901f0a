"""The demo stack (docker-compose.yml and deploy/): checked statically, and its Prometheus
configuration run with the real binary. No Docker engine is needed."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.rules import REPO, RULES_FILE, load_rules
from tests.support.services import free_port, prometheus, prometheus_binary, wait_for_port

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROM_CONFIG_PATH = REPO / "deploy" / "prometheus" / "prometheus.yml"
PROM_CONFIG = yaml.safe_load(PROM_CONFIG_PATH.read_text())
GRAFANA_PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
DEMO_SERVICES = ("demo-1", "demo-2")
# Default listen ports of the images (none of them is overridden in the compose file).
IMAGE_PORTS = {"postgres": 5432, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}
JAEGER_PORTS = {"ui": 16686, "otlp_http": 4318}


def bind_mounts(service: str) -> dict[str, Path]:
    """Container path -> host path for the service's bind mounts."""
    mounts = {}
    for volume in SERVICES[service].get("volumes", []):
        host, container = volume.split(":")[:2]
        mounts[container] = (REPO / host).resolve()
    return mounts


def host_path(service: str, container_path: str) -> Path:
    """Where a path inside a container comes from on the host (through a bind mount)."""
    target = PurePosixPath(container_path)
    for container, host in bind_mounts(service).items():
        if target == PurePosixPath(container) or PurePosixPath(container) in target.parents:
            return host / target.relative_to(container)
    raise AssertionError(f"{container_path} is not mounted into {service}")


def container_ports(service: str) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1]) for p in SERVICES[service].get("ports", [])}


def demo_args(service: str) -> dict[str, str]:
    command = SERVICES[service]["command"]
    assert command[0] == "demo"
    args: dict[str, str] = {}
    i = 1
    while i < len(command):
        flag = command[i]
        if i + 1 < len(command) and not command[i + 1].startswith("--"):
            args[flag] = command[i + 1]
            i += 2
        else:
            args[flag] = ""
            i += 1
    return args


# --- compose ----------------------------------------------------------------------------------

def test_compose_has_the_stack_services() -> None:
    assert set(SERVICES) == {"postgres", *DEMO_SERVICES, "jaeger", "prometheus",
                             "alertmanager", "grafana"}


def test_every_mounted_path_exists() -> None:
    mounts = [(s, c, h) for s in SERVICES for c, h in bind_mounts(s).items()]
    assert len(mounts) == 5
    for service, container, host in mounts:
        assert host.exists(), f"{service} mounts missing {host} at {container}"
        assert REPO in host.parents, f"{service} mounts {host} from outside the repository"


def test_demo_image_is_built_from_this_repository() -> None:
    for service in DEMO_SERVICES:
        build = SERVICES[service]["build"]
        context = (REPO / build["context"]).resolve()
        dockerfile = context / build["dockerfile"]
        assert context == REPO and dockerfile.is_file()
        text = dockerfile.read_text()
        assert re.search(r'pip install "?\.\[otlp,demo\]"?', text)
        assert '"poolwatch"' in text  # ENTRYPOINT: the console script of pyproject.toml
        for line in re.findall(r"^COPY (.+)$", text, flags=re.MULTILINE):
            *sources, _ = shlex.split(line)
            for source in sources:
                assert (context / source).exists(), f"Dockerfile copies missing {source}"
    assert "[project.scripts]" in (REPO / "pyproject.toml").read_text()


def test_demo_replicas_run_the_demo_against_the_compose_postgres() -> None:
    for service in DEMO_SERVICES:
        args = demo_args(service)
        assert set(args) == {"--db", "--addr", "--port", "--duration", "--no-tui"}
        assert (args["--addr"], args["--duration"]) == ("0.0.0.0", "0")
        db = urlsplit(args["--db"])
        assert db.scheme == "postgresql+psycopg"
        assert db.hostname in SERVICES and db.port == IMAGE_PORTS[db.hostname]
        assert db.path.lstrip("/") == SERVICES["postgres"]["environment"]["POSTGRES_DB"]
        assert SERVICES["postgres"]["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
        assert int(args["--port"]) in container_ports(service)
        assert SERVICES[service]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "healthcheck" in SERVICES["postgres"]


def test_demo_tracing_goes_to_jaeger_over_otlp() -> None:
    for service in DEMO_SERVICES:
        env = SERVICES[service]["environment"]
        assert env["POOLWATCH_TRACING"] == "true"
        assert env["OTEL_SERVICE_NAME"]
        endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert (endpoint.hostname, endpoint.port) == ("jaeger", JAEGER_PORTS["otlp_http"])
    assert SERVICES["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


# --- Prometheus -------------------------------------------------------------------------------

def test_prometheus_scrapes_every_demo_replica_on_its_exporter_port() -> None:
    jobs = {j["job_name"]: j for j in PROM_CONFIG["scrape_configs"]}
    targets = [t for sc in jobs["poolwatch-demo"]["static_configs"] for t in sc["targets"]]
    assert sorted(targets) == [f"{s}:{demo_args(s)['--port']}" for s in DEMO_SERVICES]


def test_prometheus_sends_alerts_to_the_compose_alertmanager() -> None:
    (am,) = PROM_CONFIG["alerting"]["alertmanagers"]
    (target,) = am["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "alertmanager" and int(port) == IMAGE_PORTS["alertmanager"]
    assert IMAGE_PORTS["alertmanager"] in container_ports("alertmanager")


def test_prometheus_rule_files_resolve_to_exactly_the_shipped_rules() -> None:
    found = set()
    for pattern in PROM_CONFIG["rule_files"]:
        found |= {Path(p) for p in glob.glob(str(host_path("prometheus", pattern)))}
    assert found == {RULES_FILE.resolve()}  # and not the promtool test files


def adapted_config(rules_dir: str, scrape_target: str, alertmanager_port: int) -> dict[str, Any]:
    """The shipped config with only container paths and network targets replaced."""
    config = yaml.safe_load(PROM_CONFIG_PATH.read_text())
    config["rule_files"] = [f"{rules_dir}/{PurePosixPath(p).name}" for p in config["rule_files"]]
    for job in config["scrape_configs"]:
        if job["job_name"] == "poolwatch-demo":
            job["static_configs"] = [{"targets": [scrape_target]}]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [
        {"targets": [f"127.0.0.1:{alertmanager_port}"]}]
    return config


def test_promtool_check_config(tmp_path: Path) -> None:
    # The config as shipped parses; with its rule paths mapped to the host, rules are checked too.
    result = subprocess.run([prometheus_binary("promtool"), "check", "config",
                             str(PROM_CONFIG_PATH)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(PROM_CONFIG_PATH.read_text())
    config["rule_files"] = [str(host_path("prometheus", p)) for p in config["rule_files"]]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([prometheus_binary("promtool"), "check", "config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout + result.stderr


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture
def demo_from_compose(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """The demo replicas' command and environment from docker-compose.yml, run here: only the
    database URL, the listen address and port, and the OTLP endpoint point at loopback."""
    port = free_port()
    args = demo_args("demo-1")
    args.update({"--db": postgres_url, "--addr": "127.0.0.1", "--port": str(port)})
    env = {**os.environ, **SERVICES["demo-1"]["environment"],
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    command = [sys.executable, "-m", "poolwatch", "demo"]
    for flag, value in args.items():
        command += [flag, value] if value else [flag]
    with (tmp_path / "demo.log").open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_port(port, timeout=30)
            yield f"127.0.0.1:{port}"
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
        finally:
            proc.kill()
            proc.wait(10)


def wait_until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return result


@pytest.mark.slow
def test_real_prometheus_runs_the_shipped_config_and_rules_on_the_demo(
        demo_from_compose: str) -> None:
    """The shipped prometheus.yml (scrape targets and paths adapted) and rules, scraping the
    demo as the stack runs it: the rules load and evaluate without errors over real data."""
    config = adapted_config("rules", demo_from_compose, free_port())
    files = {"rules/poolwatch.rules.yml": RULES_FILE.read_text()}
    with prometheus(yaml.safe_dump(config), files) as server:
        def rules() -> list[dict[str, Any]]:
            found = [r for g in get_json(server.url + "/api/v1/rules")["groups"]
                     for r in g["rules"]]
            return found if found and all(r["health"] == "ok" for r in found) else []

        loaded = wait_until("every rule evaluated cleanly", rules, 40)
        groups = get_json(server.url + "/api/v1/rules")["groups"]
        assert [g["name"] for g in groups] == ["poolwatch"]
        assert {r["name"] for r in loaded} == {r.get("alert") or r["record"] for r in load_rules()}
        assert all(r.get("lastError", "") == "" for r in loaded)  # omitted when empty
        # Every alert loaded with the `for` the rule file gives it (0 where it has none).
        assert {r["name"]: r.get("duration", 0) for r in loaded if r["type"] == "alerting"} == {
            r["alert"]: _seconds(r.get("for", "0s")) for r in load_rules() if "alert" in r
        }

        # Scrapes every 15 s and evaluates every 15 s as shipped: a recorded series appears for
        # the demo's pool within two intervals.
        query = urllib.parse.quote('pool:db_client_connection_saturation:ratio{job="poolwatch-demo"}')
        (sample,) = wait_until(
            "the demo's saturation to be recorded",
            lambda: get_json(f"{server.url}/api/v1/query?query={query}")["result"], 45)
        assert sample["metric"]["instance"] == demo_from_compose
        assert 0 <= float(sample["value"][1]) <= 1
        targets = get_json(server.url + "/api/v1/targets")["activeTargets"]
        demo = [t for t in targets if t["labels"]["job"] == "poolwatch-demo"]
        assert [t["health"] for t in demo] == ["up"]


# --- Grafana ----------------------------------------------------------------------------------

def grafana_datasources() -> list[dict[str, Any]]:
    doc = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "poolwatch.yml").read_text())
    assert doc["apiVersion"] == 1
    return list(doc["datasources"])


def test_grafana_provisioning_is_mounted() -> None:
    assert host_path("grafana", "/etc/grafana/provisioning") == GRAFANA_PROVISIONING.resolve()
    assert sorted(p.name for p in GRAFANA_PROVISIONING.iterdir()) == ["dashboards", "datasources"]


def test_grafana_datasources_point_at_compose_services() -> None:
    datasources = {d["uid"]: d for d in grafana_datasources()}
    assert set(datasources) == {"prometheus", "jaeger", "alertmanager"}
    expected_ports = {**IMAGE_PORTS, "jaeger": JAEGER_PORTS["ui"]}
    for ds in datasources.values():
        url = urlsplit(ds["url"])
        assert url.hostname in SERVICES, ds
        assert url.port == expected_ports[url.hostname], ds
    assert datasources["prometheus"]["type"] == "prometheus"
    assert datasources["prometheus"]["isDefault"] is True
    scrape_interval = PROM_CONFIG["global"]["scrape_interval"]
    assert datasources["prometheus"]["jsonData"]["timeInterval"] == scrape_interval
    for link in datasources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]:
        assert link["datasourceUid"] in datasources
    assert datasources["jaeger"]["type"] == "jaeger"


def test_grafana_dashboard_provider_loads_the_committed_dashboards() -> None:
    doc = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "poolwatch.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    directory = host_path("grafana", provider["options"]["path"])
    assert directory == (REPO / "dashboards").resolve()
    assert sorted(p.name for p in directory.glob("*.json")) == [
        "poolwatch-fleet.json", "poolwatch-pool-overview.json"]
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path("grafana", home).is_file()


# --- Alertmanager -----------------------------------------------------------------------------

def test_alertmanager_config_is_consistent() -> None:
    config = yaml.safe_load(host_path("alertmanager", "/etc/alertmanager/alertmanager.yml")
                            .read_text())
    command = SERVICES["alertmanager"]["command"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in command
    receivers = {r["name"] for r in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert {r["receiver"] for r in routes} <= receivers
    assert {"job", "instance", "db_client_connection_pool_name"} <= set(
        config["route"]["group_by"])
    alert_names = {r["alert"] for r in load_rules() if "alert" in r}
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            names = re.fullmatch(r'alertname=~?"(.+)"', matcher)
            assert names, matcher
            assert set(names.group(1).split("|")) <= alert_names, matcher


def _seconds(duration: str) -> int:
    """A Prometheus duration as the rules API reports it (``"10m"`` -> 600)."""
    units = {"s": 1, "m": 60, "h": 3600}
    return int(duration[:-1]) * units[duration[-1]]
