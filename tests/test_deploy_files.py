"""The Dockerfile and docker-compose.yml, checked by parsing them (no Docker engine here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from alerts.rules import load_rules
from alerts.service import check_projects
from tracklane.cli import _parser
from tracklane.projects import load_projects
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
    assert "8080:8080" in services["collector"]["ports"]


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


def test_compose_projects_and_alerts_files_are_valid() -> None:
    projects = load_projects(ROOT / "deploy" / "projects.toml")
    assert projects.by_write_key("wk_demo") is not None
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


def test_readme_documents_every_setting_and_ci_runs_its_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`TRACKLANE_{name.upper()}`" in readme, name
    test_command = "ruff check . && mypy && python -m pytest -q"
    assert test_command in readme
    assert test_command in (ROOT / ".ci" / "run").read_text()
