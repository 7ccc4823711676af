"""The browser SDK's own test suite (node's test runner, fake timers) and its build."""

from __future__ import annotations

import filecmp
from pathlib import Path

from tests import sdk_js


def test_sdk_unit_tests_pass() -> None:
    sdk_js.require_tooling()
    result = sdk_js.node("--test", "test/")
    summary = [line for line in result.stdout.splitlines()
               if line.startswith(("# pass", "# fail", "# tracklane.min.js"))]
    print("\n".join(summary))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in summary


def test_committed_dist_is_the_build_of_the_sources(tmp_path: Path) -> None:
    """`tracklane up` serves the committed dist/, so it must be what the sources build to."""
    sdk_js.require_tooling()
    report = sdk_js.build(tmp_path)
    print(report)
    built = sorted(p.name for p in tmp_path.iterdir())
    assert sorted(p.name for p in sdk_js.DIST.iterdir()) == built
    _, mismatch, errors = filecmp.cmpfiles(sdk_js.DIST, tmp_path, built, shallow=False)
    assert not mismatch and not errors, (
        f"sdk_js/dist is stale ({mismatch + errors}): run `npm run build` in sdk_js and commit")
