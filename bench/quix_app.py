"""The peer: Quix Streams and its PostgreSQL sink on the same workload (run by bench.peer_quix).

Usage: python -m devtrail.bench.quix_app BOOTSTRAP TOPIC GROUP PGHOST PGPORT DBNAME USER TABLE STATE_DIR
"""

from __future__ import annotations

import sys
from typing import Any


def main(argv: list[str]) -> None:
    from quixstreams import Application
    from quixstreams.sinks.community.postgresql import PostgreSQLSink

    bootstrap, topic_name, group, host, port, dbname, user, table, state_dir = argv
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,  # Quix would create ./state in the working directory
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    )
    topic = app.topic(topic_name, value_deserializer="json")
    sink = PostgreSQLSink(
        host=host,
        port=int(port),
        dbname=dbname,
        user=user,
        password="",
        table_name=table,
        primary_key_columns="event_id",
        on_conflict_do_nothing=True,
        include_metadata=False,
    )

    def flatten(event: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in event.items() if k != "payload"} | {"payload": event.get("payload")}

    app.dataframe(topic).apply(flatten).sink(sink)
    app.run()


if __name__ == "__main__":
    main(sys.argv[1:])
