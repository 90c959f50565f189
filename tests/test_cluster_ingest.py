"""`flowrelay ingest FILE URL --workers N --coordinator HOST:PORT` as an Indexed Job runs it: 30,000 Documents
over 3 workers into a relay that records every id it sees (durably, with repeats counted). One worker is
killed with -9 in the middle; the run exits 1 naming it; the same commands run again resume each shard
from its own checkpoint, and every Document of the input has been delivered, with the ids an unsplit
run derives.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cluster_helpers import free_port, start_worker, stop
from relay_process import LOOPBACK, RelayProcess, run_relay

from loadtest.ingest.readers import derive_id

N_DOCS = 30_000


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[RelayProcess, Path]]:
    db = tmp_path / "ids.sqlite"
    with run_relay("--log-level", "WARNING", "-e", f"record:{db}") as relay:
        yield relay, db


def recorded(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, n FROM ids").fetchall())


def test_sharded_ingest_with_a_worker_killed_and_rerun_delivers_every_document(
        recorder: tuple[RelayProcess, Path], tmp_path: Path) -> None:
    relay, db = recorder
    docs = tmp_path / "docs.jsonl"
    bodies = [orjson.dumps({"text": f"document {i}"}) for i in range(N_DOCS)]
    docs.write_bytes(b"\n".join(bodies) + b"\n")
    expected = {derive_id(i, body) for i, body in enumerate(bodies)}
    (tmp_path / "state").mkdir()
    port = free_port()
    args = ["ingest", str(docs), relay.url, "--workers", "3", "--coordinator", f"{LOOPBACK}:{port}",
            "--checkpoint", str(tmp_path / "state" / "docs.ckpt"), "--dead-letter", str(tmp_path / "failed.jsonl"),
            "--summary-json", str(tmp_path / "summary.json"), "--rate", "3000", "--worker-timeout", "3s"]

    workers = [start_worker(args, k) for k in (1, 2, 0)]
    try:
        deadline = time.monotonic() + 60
        while "all 3 workers ready" not in (line := workers[2].proc.stderr.readline()):  # type: ignore[union-attr]
            assert line and time.monotonic() < deadline, "the run did not start"
        time.sleep(3.0)  # T0 + about 1 s: each shard has sent about a third of its 10,000
        workers[1].proc.send_signal(signal.SIGKILL)  # worker 2
        codes = {w.index: w.wait() for w in workers}
    finally:
        stop(workers)
    assert codes[0] == 1 and codes[2] == -signal.SIGKILL, workers[2].stderr + workers[0].stderr
    assert "worker 2 lost at" in workers[2].stderr, workers[2].stderr
    assert (tmp_path / "summary.json").exists(), workers[2].stderr + workers[2].stdout + "\n----\n" + workers[0].stderr
    first = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert first["complete"] is False and [w["worker"] for w in first["workers"]["lost"]] == [2]
    assert 0 < len(recorded(db)) < N_DOCS

    # The same commands again (the Job run again): each shard resumes from its own checkpoint.
    again = [start_worker(args, k) for k in (0, 1, 2)]
    try:
        codes = {w.index: w.wait() for w in again}
    finally:
        stop(again)
    assert codes == {0: 0, 1: 0, 2: 0}, again[0].stderr
    second = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert second["complete"] is True and second["workers"]["lost"] == []
    assert second["totals"] == {"records": N_DOCS, "acknowledged": N_DOCS, "dead_lettered": 0}
    assert second["resumed"]["settled_before"] > 0
    seen = recorded(db)
    assert set(seen) == expected  # every Document delivered, with the ids an unsplit run gives them
    # Repeats only from what was in flight when the worker died (at most its window of batches).
    assert sum(n - 1 for n in seen.values()) <= 2 * 16 * 32
    shards = [orjson.loads((tmp_path / f"summary.{k}-of-3.json").read_bytes()) for k in range(3)]
    assert sum(s["totals"]["records"] for s in shards) == N_DOCS
