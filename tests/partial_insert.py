"""Run by tests/test_stream_new_log.py in a process of its own (one chDB path per process):
leave the store as a crash in the middle of the sink's insert of its last intended batch
does, the ``events`` part landed and the views' (``event_ids``, the rollups) not.

    python -m tests.partial_insert <store dsn> <group> <topic>    # the batch's Kafka
                                                                   # values, hex, on stdin
"""

from __future__ import annotations

import sys

from tracklane.contract import Envelope, envelope_to_row
from tracklane.store.client import create_client
from tracklane.store.queries import insert_events, latest_intent

# The views a crash between the table's part and theirs leaves without the batch.
VIEWS = ("event_ids_mv", "rollups_minute_mv")


def main(dsn: str, group: str, topic: str) -> None:
    client = create_client(dsn)
    intent = latest_intent(client, group, topic, 0)
    assert intent is not None
    values = [bytes.fromhex(line) for line in sys.stdin.read().split()]
    assert len(values) == intent.end_offset - intent.start_offset + 1
    rows = [envelope_to_row(Envelope.from_kafka_value(v), 0, intent.start_offset + i,
                            intent.batch_token) for i, v in enumerate(values)]
    for view in VIEWS:
        client.command(f"DETACH TABLE {view}")
    try:
        insert_events(client, rows, intent.batch_token)
    finally:
        for view in VIEWS:
            client.command(f"ATTACH TABLE {view}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
