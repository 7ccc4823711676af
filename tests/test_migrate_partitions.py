"""Migration 0015 on a store made by the migrations before it: `events` and
`rollups_minute` move from daily to monthly partitions with every row, and the views go on
feeding them (tests/partition_migration.py runs it in a process of its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_an_existing_store_moves_to_monthly_partitions(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "tests.partition_migration",
                          f"chdb://{tmp_path / 'store'}"], check=True, capture_output=True,
                         text=True, timeout=300).stdout
    result = json.loads(out.splitlines()[-1])
    before, after, later = result["before"], result["after"], result["later"]
    assert before["keys"] == {"events": "toYYYYMMDD(timestamp)",
                              "rollups_minute": "toYYYYMMDD(minute)"}
    assert len(before["partitions"]) == 45
    assert 15 in result["applied"]
    assert after["keys"] == {"events": "toYYYYMM(timestamp)",
                             "rollups_minute": "toYYYYMM(minute)"}
    # 20 Oct to 3 Dec: three months, every row kept, no copy left beside the tables.
    assert after["partitions"] == [["202610"], ["202611"], ["202612"]]
    assert after["events"] == before["events"] == 45
    assert after["rollups"] == before["rollups"] == 45
    assert after["tables"] == []
    # New events reach the new events table and, through the view, the new rollups.
    assert later["events"] == 48 and later["rollups"] == 48
    assert result["again"] == []
