"""A wheel built from the project installs one top-level name, ``tracklane``: the stages'
folders are its subpackages (tracklane/collector -> ../collector, ...), so nothing generic
(``store``, ``alerts``) lands at the top of site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_one_top_level_name(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("tracklane-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"tracklane", wheel.name.split("-")[0]
                                                      + "-" + wheel.name.split("-")[1]
                                                      + ".dist-info"}
    for stage in ("collector/app.py", "stream/sink.py", "store/migrate.py",
                  "store/migrations/0001_events.sql", "alerts/engine.py"):
        assert f"tracklane/{stage}" in names, stage
