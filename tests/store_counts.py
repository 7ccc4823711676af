"""Print what a chDB store holds, as JSON. Runs in its own process: one chDB path per process."""

from __future__ import annotations

import sys

import orjson

from tracklane.store.client import create_client, scalar


def main(path: str) -> None:
    client = create_client(f"chdb://{path}")
    ids = [r[0] for r in client.query("SELECT message_id FROM events").result_rows]
    print(orjson.dumps({
        "raw": scalar(client, "SELECT count() FROM events"),
        "rollup_sum": int(scalar(client, "SELECT sum(events) FROM rollups_minute") or 0),
        "id_rows": scalar(client, "SELECT count() FROM event_ids"),
        "message_ids": ids,
    }).decode())
    client.close()


if __name__ == "__main__":
    main(sys.argv[1])
