"""`tracklane migrate` and configuration errors, run as the installed command."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tracklane.broker import free_port
from tracklane.projects import write_default_projects
from tracklane.store.migrate import available_migrations


def tracklane(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "tracklane"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_migrate_applies_each_version_once(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'store'}"
    first = tracklane("migrate", "--store", dsn, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    versions = [m.version for m in available_migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert f"migrations applied: {versions}" in first.stdout
    parts = _parts(dsn)
    again = tracklane("migrate", "--store", dsn, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "none (up to date)" in again.stdout
    # Nothing changed: no TTL or dictionary statement ran again, and no part was
    # rewritten (the lock's two rows are the only new data).
    assert _parts(dsn) == parts


def _parts(dsn: str) -> list[list[str]]:
    """The store's active parts, but the migration lock's, with their modification times,
    and the settings it recorded (read in a process of its own: one chDB path each)."""
    script = (
        "import json, sys\n"
        "from store.client import create_client\n"
        "c = create_client(sys.argv[1])\n"
        "rows = c.query(\"SELECT table, name, toString(modification_time) FROM system.parts \"\n"
        "  \"WHERE active AND database = currentDatabase() AND table != 'schema_lock' \"\n"
        "  \"ORDER BY table, name\").result_rows\n"
        "rows += c.query('SELECT name, digest FROM schema_settings ORDER BY name, applied_at'"
        ").result_rows\n"
        "print(json.dumps([[str(v) for v in r] for r in rows]))\n")
    out = subprocess.run([sys.executable, "-c", script, dsn], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    parts: list[list[str]] = json.loads(out)
    return parts


@pytest.mark.parametrize("command", ["stream", "alerts", "collector"])
def test_a_store_behind_the_migrations_is_refused_not_migrated(
        tmp_path: Path, command: str) -> None:
    """Only `migrate` and `up` migrate: the others check the schema and run no DDL."""
    dsn = f"chdb://{tmp_path / 'store'}"
    env = {**os.environ, "TRACKLANE_STORE_DSN": dsn,
           "TRACKLANE_ALERTS_FILE": str(tmp_path / "alerts.yaml")}
    (tmp_path / "alerts.yaml").write_text("rules: []\n")
    write_default_projects(tmp_path / "data" / "projects.toml")
    result = subprocess.run([str(Path(sys.executable).parent / "tracklane"), command],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stderr
    latest = available_migrations()[-1].version
    assert (f"the store's schema is at version 0000, this Tracklane needs {latest:04d}: run "
            "`tracklane migrate`") in result.stderr


def test_bad_configuration_is_reported_not_raised(tmp_path: Path) -> None:
    bad_port = tracklane("up", "--port", "not-a-port", cwd=tmp_path)
    assert bad_port.returncode == 2 and "invalid int value" in bad_port.stderr
    (tmp_path / "projects.toml").write_text("[[project]]\nid = 'has space'\n")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "tracklane"), "collector"], cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
        env={"TRACKLANE_PROJECTS_FILE": str(tmp_path / "projects.toml"), "PATH": "/usr/bin"},
    )
    assert result.returncode == 2
    assert "project.0.id" in result.stderr
    bad_dsn = tracklane("migrate", "--store", "mysql://x", cwd=tmp_path)
    assert bad_dsn.returncode == 2 and "unsupported store DSN scheme" in bad_dsn.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_up_on_a_taken_port_says_so_and_starts_nothing(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = tracklane("up", "--port", str(port), "--data-dir", "data", "--workers",
                           workers, cwd=tmp_path)
    assert result.returncode == 2
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in result.stderr
    # Found before the broker (or anything else) was started.
    assert not (tmp_path / "data" / "tansu.log").exists()
    assert "Traceback" not in result.stderr, result.stderr


def test_up_whose_workers_cannot_start_stops_everything_it_started(tmp_path: Path) -> None:
    # A file where the journals' directory should be: every worker fails to open its own.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "spool").write_text("not a directory")
    port = free_port()
    result = tracklane("up", "--port", str(port), "--data-dir", "data", "--workers", "2",
                       cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "tracklane: collector worker" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    # The broker had started, and was stopped again: nothing listens on its port any more.
    broker_log = (tmp_path / "data" / "tansu.log").read_text()
    match = re.search(r"listening on: tcp://127\.0\.0\.1:(\d+)", broker_log)
    assert match, broker_log
    for taken in (int(match.group(1)), port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", taken)) != 0
