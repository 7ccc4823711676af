"""The projects file and the configuration surface."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracklane.cli import _parser, load_settings
from tracklane.projects import ProjectsFileError, load_projects, write_default_projects


def test_default_project_is_generated_with_fresh_keys(tmp_path: Path) -> None:
    path = tmp_path / "projects.toml"
    project = write_default_projects(path)
    loaded = load_projects(path)
    assert loaded.projects == (project,)
    assert loaded.by_write_key(project.write_keys[0]) == project
    assert loaded.by_read_key(project.read_keys[0]) == project
    # A write key never opens the read API, nor the other way round.
    assert loaded.by_read_key(project.write_keys[0]) is None
    assert loaded.by_write_key(project.read_keys[0]) is None
    assert write_default_projects(tmp_path / "other.toml").write_keys != project.write_keys


@pytest.mark.parametrize(("text", "error"), [
    ("[[project]]\nid = 'a b'\n", "project.0.id"),
    ("[[project]]\nid = 'a'\n[[project]]\nid = 'a'\n", "unique"),
    ("[[project\n", "projects.toml"),
    ("[[project]]\nid = 'a'\nwrite_keys = 'k'\n", "write_keys"),
])
def test_bad_projects_files_name_the_problem(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "projects.toml"
    path.write_text(text)
    with pytest.raises(ProjectsFileError, match=error):
        load_projects(path)


def test_cli_flags_override_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRACKLANE_PORT", "9000")
    monkeypatch.setenv("TRACKLANE_DATA_DIR", "/srv/tracklane")
    monkeypatch.setenv("TRACKLANE_BATCH_MAX_RECORDS", "123")
    settings = load_settings(_parser().parse_args(["up", "--port", "8181"]))
    assert settings.port == 8181
    assert settings.data_dir == Path("/srv/tracklane")
    assert settings.batch_max_records == 123
    assert settings.resolved_projects_file() == Path("/srv/tracklane/projects.toml")
    assert settings.resolved_store_dsn() == "chdb:///srv/tracklane/chdb"
