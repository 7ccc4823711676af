"""The Dockerfile and docker-compose.yml, checked by parsing them (no Docker engine here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tracklane.alerts.rules import load_rules
from tracklane.alerts.service import check_projects
from tracklane.cli import _parser, main
from tracklane.config_doc import render
from tracklane.projects import ProjectsFileError, load_projects, new_keys
from tracklane.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_runs_every_part_against_kafka_and_clickhouse() -> None:
    services = compose()["services"]
    assert {"kafka", "clickhouse", "migrate", "collector", "stream", "alerts"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    subcommands = {"up", "collector", "stream", "migrate", "alerts"}
    for name in subcommands:  # each one parses
        _parser().parse_args([name])
    for name in ("migrate", "collector", "stream", "alerts"):
        service = services[name]
        assert service["build"] == "."
        assert service["command"][0] in subcommands
    assert services["collector"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully")
    # A host port range, so that `--scale collector=N` does not collide; the first is 8080.
    assert "8080-8089:8080" in services["collector"]["ports"]
    assert "container_name" not in services["collector"]


def test_compose_environment_names_real_settings() -> None:
    fields = {f"TRACKLANE_{name.upper()}" for name in Settings.model_fields}
    for name, service in compose()["services"].items():
        for key in (service.get("environment") or {}):
            if key.startswith("TRACKLANE_"):
                assert key in fields, f"{name}: {key} is not a setting"
    env = compose()["services"]["collector"]["environment"]
    settings = Settings(**{k[len("TRACKLANE_"):].lower(): v for k, v in env.items()})
    assert settings.resolved_store_dsn().startswith("http://")
    assert settings.kafka().bootstrap_servers == "kafka:9092"


def test_compose_projects_and_alerts_files_are_valid(tmp_path: Path) -> None:
    # The sample's keys are public: refused until replaced.
    sample = (ROOT / "deploy" / "projects.toml").read_text()
    with pytest.raises(ProjectsFileError, match="still has the sample key"):
        load_projects(ROOT / "deploy" / "projects.toml")
    write_key, read_key = new_keys()
    edited = tmp_path / "projects.toml"
    edited.write_text(sample.replace("wk_REPLACE_ME", write_key)
                      .replace("rk_REPLACE_ME", read_key))
    projects = load_projects(edited)
    assert projects.by_write_key(write_key) is not None
    rules = load_rules(ROOT / "deploy" / "alerts.yaml")
    check_projects(rules, {p.id for p in projects.projects})
    alerts = compose()["services"]["alerts"]
    assert "./deploy/alerts.yaml:" + alerts["environment"]["TRACKLANE_ALERTS_FILE"] + ":ro" in (
        alerts["volumes"])


def test_dockerfile_installs_the_package_and_runs_the_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    for folder in ("tracklane", "collector", "stream", "store", "alerts"):
        assert f"COPY {folder} ./{folder}" in text
    assert 'ENTRYPOINT ["tracklane"]' in text
    assert re.search(r"^USER (?!root)", text, re.M)
    assert "EXPOSE 8080" in text and "/healthz" in text
    # The collector serves the browser SDK from the image.
    sdk = re.search(r"^COPY sdk_js/dist (\S+)$", text, re.M)
    assert sdk and f"TRACKLANE_SDK_DIR={sdk.group(1)}" in text


def test_the_configuration_reference_is_generated_and_current() -> None:
    """docs/configuration.md is what tracklane/config_doc.py makes of the settings' field
    docstrings: every setting, its default and what it means."""
    reference = (ROOT / "docs" / "configuration.md").read_text()
    assert reference == render(), "run: python -m tracklane.config_doc > docs/configuration.md"
    for name in Settings.model_fields:
        assert f"| `TRACKLANE_{name.upper()}` |" in reference, name


def test_ci_runs_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    test_command = "ruff check . && mypy && lint-imports && python -m pytest -q -n 2"
    assert test_command in readme
    assert test_command in (ROOT / ".ci" / "run").read_text()


REQUIRED_SERVICES = {"kafka", "clickhouse", "migrate", "collector", "stream", "alerts",
                     "grafana", "prometheus", "alertmanager"}


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def _dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env = re.search(r"^ENV (.+)$", text, re.M)
    assert env
    return dict(pair.split("=", 1) for pair in env.group(1).split())


def _metrics_port(name: str, service: dict[str, Any]) -> int:
    """Where a Tracklane service serves /metrics: the collector on its HTTP port."""
    env = {**_dockerfile_env(), **_env(service)}
    if name == "collector":
        return int(env["TRACKLANE_PORT"])
    return int(env.get("TRACKLANE_METRICS_PORT", Settings.model_fields["metrics_port"].default))


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Grafana's ${VAR} expansion of provisioning files."""
    return re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], text)


def test_compose_stack_is_consistent() -> None:
    data = compose()
    services: dict[str, Any] = data["services"]
    assert set(services) >= REQUIRED_SERVICES
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")

    fields = {f"TRACKLANE_{name.upper()}" for name in Settings.model_fields}
    declared = set(data.get("volumes") or {})
    for name, service in services.items():
        for key in _env(service):
            if key.startswith("TRACKLANE_"):
                assert key in fields, f"{name}: {key} is not a setting"
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec["condition"] in ("service_healthy", "service_completed_successfully")
            if spec["condition"] == "service_healthy":
                assert not services[dep].get("healthcheck", {}).get("disable"), (name, dep)
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} is not in the repo"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
    for name in ("kafka", "clickhouse", "grafana", "prometheus", "alertmanager"):
        assert any(m.split(":", 1)[0] in declared for m in services[name]["volumes"]), name

    # Scalable services: replicas need distinct names and one consumer group.
    for name in ("collector", "stream"):
        assert "container_name" not in services[name]
    assert "TRACKLANE_CONSUMER_INSTANCE_ID" not in _env(services["stream"])
    assert services["collector"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    grafana = services["grafana"]
    assert "grafana-clickhouse-datasource" in _env(grafana)["GF_INSTALL_PLUGINS"]
    assert "/api/health" in " ".join(grafana["healthcheck"]["test"])
    assert {"./grafana/provisioning:/etc/grafana/provisioning:ro",
            "./grafana/dashboards:/etc/grafana/dashboards:ro"} <= set(grafana["volumes"])


def test_compose_publishes_only_the_collector_and_grafana() -> None:
    services = compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"collector", "grafana"}
    # No default admin password: compose refuses to start without one.
    password = str(_env(services["grafana"])["GF_SECURITY_ADMIN_PASSWORD"])
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), password


def test_keys_prints_a_block_the_projects_file_takes(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "--project", "shop"]) == 0
    block = capsys.readouterr().out
    (tmp_path / "projects.toml").write_text(block)
    (project,) = load_projects(tmp_path / "projects.toml").projects
    assert project.id == "shop" and project.write_keys[0].startswith("wk_")
    assert main(["keys", "--project", "shop"]) == 0
    assert capsys.readouterr().out != block  # fresh every time


def test_prometheus_scrapes_every_service_where_it_serves_metrics() -> None:
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    scraped: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert name in services, f"scrape target {name} is not a service"
                scraped[name] = sd["port"]
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                assert target.split(":")[0] in services, target
    assert {name: _metrics_port(name, services[name])
            for name in ("collector", "stream", "alerts")} == scraped


def test_grafana_reads_the_compose_clickhouse_with_its_credentials() -> None:
    services = compose()["services"]
    provisioning = ROOT / "grafana" / "provisioning"
    text = (provisioning / "datasources" / "clickhouse.yaml").read_text()
    sources = yaml.safe_load(_interpolate(text, _env(services["grafana"])))["datasources"]
    ch = next(s for s in sources if s["type"] == "grafana-clickhouse-datasource")
    clickhouse_env = _env(services["clickhouse"])
    assert ch["jsonData"]["host"] in services and ch["jsonData"]["host"] == "clickhouse"
    assert ch["jsonData"]["protocol"] == "http"
    assert ch["jsonData"]["username"] == clickhouse_env["CLICKHOUSE_USER"]
    assert ch["secureJsonData"]["password"] == clickhouse_env["CLICKHOUSE_PASSWORD"]
    # The stream writes where Grafana reads.
    dsn = Settings(store_dsn=_env(services["stream"])["TRACKLANE_STORE_DSN"]).resolved_store_dsn()
    assert dsn == (f"http://{ch['jsonData']['username']}:{ch['secureJsonData']['password']}"
                   f"@clickhouse:{ch['jsonData']['port']}/{ch['jsonData']['defaultDatabase']}")

    provider = yaml.safe_load((provisioning / "dashboards" / "tracklane.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in services["grafana"]["volumes"]
    boards = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert boards
    for board in boards:
        for uid in _datasource_uids(json.loads(board.read_text())):
            assert uid == ch["uid"], f"{board.name}: datasource {uid}"


def _datasource_uids(node: Any) -> list[str]:
    """Every datasource uid a dashboard names, Grafana's own annotations left out."""
    out: list[str] = []
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict) and source.get("type") != "grafana":
            out.append(source["uid"])
        for value in node.values():
            out += _datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            out += _datasource_uids(value)
    return out


def test_alerts_notify_the_compose_alertmanager() -> None:
    services = compose()["services"]
    rules = load_rules(ROOT / "deploy" / "alerts.yaml")
    managers = [n for n in rules.notifiers if n.kind == "alertmanager"]
    assert managers and all(n.url == "http://alertmanager:9093" for n in managers)
    # Reached on the compose network (alertmanager listens on 9093 by default).
    assert "--web.listen-address" not in " ".join(services["alertmanager"]["command"])
    assert services["alerts"]["depends_on"]["alertmanager"]["condition"] == "service_healthy"
    config = yaml.safe_load((ROOT / "deploy" / "alertmanager.yml").read_text())
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert all(r["receiver"] in receivers for r in config["route"].get("routes", []))
    # Every rule's dashboard link opens a provisioned dashboard.
    uids = {json.loads(p.read_text())["uid"]
            for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    link = rules.evaluation.dashboard_url
    assert link and link.rsplit("/d/", 1)[1] in uids


def test_the_dedup_window_outlasts_kafka_retention_and_every_part_shares_the_secret() -> None:
    """A replay of the whole topic counts nothing twice, and every part matches the same
    erased ids (HMACs under one secret)."""
    services = compose()["services"]
    kafka = _env(services["kafka"])
    retention_h = int(kafka["KAFKA_LOG_RETENTION_HOURS"])
    for name in ("collector", "stream"):
        env = {**_dockerfile_env(), **_env(services[name])}
        window_h = int(env.get("TRACKLANE_DEDUP_WINDOW_HOURS",
                               Settings.model_fields["dedup_window_hours"].default))
        assert window_h > retention_h, (name, window_h, retention_h)
        assert _env(services[name])["TRACKLANE_SECRET"].startswith("${TRACKLANE_SECRET:?"), name
