"""One run over several machines: `flowrelay load|ingest ... --workers N --coordinator HOST:PORT`.

    messages.py, link.py   the coordinator protocol (msgpack on TCP) and one connection as whole messages
    clock.py               clock offsets between machines, NTP-style
    coordinator.py         worker 0's coordinator: who is in, the barrier, heartbeats, lost workers, abort
    client.py              a worker's side of the protocol
    host.py                worker 0 forks the coordinator; the one life of any worker
    load_run.py, load_merge.py       a load worker's part, and the coordinator's merge of the load
    ingest_run.py, ingest_merge.py   an ingest shard's part, and the coordinator's merge of the shards

The engine knows nothing of this package: a worker is the engine's own `Worker` with a start gate (the barrier)
and an `on_interval` callback (the rows it streams); ingestion is `run_ingest` with an `alongside` hold.
"""
