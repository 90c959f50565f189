"""`flowrelay ingest`: a user's Documents, read from files, delivered to a Flow once, to the end, resumably.

Load tests send synthetic traffic; ingestion sends real data and must never lose a Document. The modules:

* `readers`: inputs (JSON Lines, CSV/TSV, a folder, stdin; gzip/zstd) -> numbered Records, streamed;
* `prepare`: Records -> batches encoded once, with a slot for the request id;
* `sources`: where the batches are prepared: inline, or in a forked reading process ahead of the sender;
* `progress`: which input positions are settled (a watermark and the ranges above it);
* `checkpoint`: that record on disk, written atomically and durably by a thread, and the input's identity;
* `deadletter`: the JSON Lines file of Documents set aside, with their reasons;
* `ledger`: settles positions (acknowledged or dead-lettered) and tells when that is durable;
* `delivery`: batches over persistent sessions (loadtest.sessions.ws), bounded in flight, retried, paced;
* `report`: the progress line and the summary;
* `run`: puts them together and decides the exit code (the flags are flowrelay.cli.ingest).

Imports relay.wire, relay.common (loop, units) and loadtest.sessions.ws/payloads; nothing imports this package but
the CLI.
"""
