"""`flowrelay ingest` when the Flow fails: retried batches get through, exhausted ones are dead-lettered.

The relay's `fail:0.2` Executor fails exactly one request in five (every fifth it sees), before the
`record:` Executor, so a failed attempt never reaches the record and every recorded id was acknowledged.
That makes the figures exact: failed attempts = attempts // 5. Also: an endpoint that always fails,
timeouts, a relay killed -9 in the middle of a run and started again, and no dead-letter file. In every
case the accounting adds up: sent = acknowledged + dead-lettered, and every Document is in one place.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from jina_peer import free_port
from relay_process import RelayProcess, flowrelay_command, run_relay

CLI_TIMEOUT_S = 60.0


def write_docs(path: Path, n: int) -> set[str]:
    path.write_bytes(b"".join(orjson.dumps({"id": f"doc-{i}", "text": f"text {i}"}) + b"\n" for i in range(n)))
    return {f"doc-{i}" for i in range(n)}


def ingest(*args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([*flowrelay_command(), "ingest", *args, "--quiet", "--json"], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=CLI_TIMEOUT_S, check=False)
    stderr = proc.stderr.decode()
    assert proc.stdout.strip(), f"no summary; exit {proc.returncode}:\n{stderr}"
    return proc.returncode, orjson.loads(proc.stdout), stderr


def recorded(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, n FROM ids").fetchall())


def dead_letters(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def assert_accounted(summary: dict[str, Any]) -> None:
    d = summary["documents"]
    assert d["sent"] == d["acknowledged"] + d["dead_lettered"] - d["malformed"] + d["unsettled"], d
    assert d["read"] == d["acknowledged"] + d["dead_lettered"] + d["unsettled"], d


@pytest.fixture
def failing_recorder(tmp_path: Path) -> Iterator[tuple[RelayProcess, Path]]:
    db = tmp_path / "ids.sqlite"
    with run_relay("--log-level", "WARNING", "-e", "fail:0.2", "-e", f"record:{db}") as relay:
        yield relay, db


def test_retried_batches_get_through(failing_recorder: tuple[RelayProcess, Path], tmp_path: Path) -> None:
    relay, db = failing_recorder
    ids = write_docs(tmp_path / "docs.jsonl", 5000)
    dead = tmp_path / "dead.jsonl"
    code, s, stderr = ingest(str(tmp_path / "docs.jsonl"), relay.url, "--batch", "50", "--connections", "3",
                             "--retries", "10", "--dead-letter", str(dead))
    assert code == 0, stderr
    b, d = s["batches"], s["documents"]
    assert b["sent"] == 100 and b["acknowledged"] == 100
    assert b["failed"] == b["attempts"] // 5 > 0, b  # the relay failed exactly every fifth request
    assert b["retried"] == b["failed"] and d["retried"] == d["failed"] == 50 * b["failed"]
    assert d["sent"] == d["acknowledged"] == 5000 and d["dead_lettered"] == 0
    assert_accounted(s)
    assert list(s["errors"]) == ["ValueError: deliberate failure from fail (0.2 of requests) (in FailExecutor)"]
    assert recorded(db) == dict.fromkeys(ids, 1)
    assert dead.read_bytes() == b""


@pytest.mark.parametrize("reader", ["inline", "process"])
def test_no_retries_dead_letters_the_failed_batches(failing_recorder: tuple[RelayProcess, Path],
                                                     tmp_path: Path, reader: str) -> None:
    relay, db = failing_recorder
    ids = write_docs(tmp_path / "docs.jsonl", 5000)
    dead = tmp_path / "dead.jsonl"
    ckpt = tmp_path / "docs.ckpt"
    code, s, stderr = ingest(str(tmp_path / "docs.jsonl"), relay.url, "--batch", "50", "--retries", "0",
                             "--dead-letter", str(dead), "--checkpoint", str(ckpt), "--reader", reader)
    assert code == 3, stderr  # complete, with dead letters
    assert s["complete"] is True and "dead-lettered" in s["outcome"]
    b, d = s["batches"], s["documents"]
    assert b["attempts"] == 100 and b["failed"] == b["dead_lettered"] == 20 and b["retried"] == 0
    assert d["dead_lettered"] == 1000 and d["acknowledged"] == 4000 and d["sent"] == 5000
    assert d["sent"] == d["acknowledged"] + d["dead_lettered"]
    assert_accounted(s)
    entries = dead_letters(dead)
    assert len(entries) == 1000
    assert all(e["attempts"] == 1 and "deliberate failure" in e["reason"] for e in entries)
    assert all(e["source"] == str(tmp_path / "docs.jsonl") and e["line"] == e["position"] + 1 for e in entries)
    assert all(e["document"] == {"id": f"doc-{e['position']}", "text": f"text {e['position']}"} for e in entries)
    delivered, set_aside = set(recorded(db)), {e["document"]["id"] for e in entries}
    assert delivered | set_aside == ids and not delivered & set_aside
    state = orjson.loads(ckpt.read_bytes())
    assert state["complete"] and state["acknowledged"] == 4000 and state["dead_lettered"] == 1000


def test_an_always_failing_endpoint(tmp_path: Path) -> None:
    db = tmp_path / "ids.sqlite"
    ids = write_docs(tmp_path / "docs.jsonl", 300)
    dead = tmp_path / "dead.jsonl"
    with run_relay("--log-level", "WARNING", "-e", "fail:/index", "-e", f"record:{db}") as relay:
        code, s, stderr = ingest(str(tmp_path / "docs.jsonl"), relay.url, "--endpoint", "/index", "--batch",
                                 "100", "--retries", "2", "--dead-letter", str(dead))
        assert code == 3, stderr
        assert s["batches"]["attempts"] == 9 and s["batches"]["dead_lettered"] == 3
        assert s["documents"]["acknowledged"] == 0 and s["documents"]["dead_lettered"] == 300
        entries = dead_letters(dead)
        assert {e["document"]["id"] for e in entries} == ids
        assert all(e["attempts"] == 3 and "deliberate failure from fail on /index" in e["reason"] for e in entries)
        assert recorded(db) == {}
        # Another endpoint of the same Flow is fine.
        code, s, stderr = ingest(str(tmp_path / "docs.jsonl"), relay.url, "--endpoint", "/search", "--batch", "100")
        assert code == 0, stderr
        assert recorded(db) == dict.fromkeys(ids, 1)


def test_without_dead_letter_file_a_failed_batch_stops_the_run(tmp_path: Path) -> None:
    db = tmp_path / "ids.sqlite"
    write_docs(tmp_path / "docs.jsonl", 2000)
    ckpt = tmp_path / "docs.ckpt"
    with run_relay("--log-level", "WARNING", "-e", "fail:/index", "-e", f"record:{db}") as relay:
        code, s, stderr = ingest(str(tmp_path / "docs.jsonl"), relay.url, "--endpoint", "/index",
                                 "--retries", "1", "--checkpoint", str(ckpt))
        assert code == 1
        assert "no --dead-letter file" in stderr and s["complete"] is False
        assert s["documents"]["acknowledged"] == 0 and s["documents"]["dead_lettered"] == 0
        assert_accounted(s)
        # Resumable: the same checkpoint with a dead-letter file finishes the job.
        dead = tmp_path / "dead.jsonl"
        code, s, stderr = ingest(str(tmp_path / "docs.jsonl"), relay.url, "--endpoint", "/index",
                                 "--retries", "0", "--checkpoint", str(ckpt), "--dead-letter", str(dead))
        assert code == 3, stderr
        assert s["totals"] == {"records": 2000, "acknowledged": 0, "dead_lettered": 2000}
        assert len(dead_letters(dead)) == 2000


def test_timeouts_are_retried_then_dead_lettered(tmp_path: Path) -> None:
    write_docs(tmp_path / "docs.jsonl", 64)
    dead = tmp_path / "dead.jsonl"
    with run_relay("--log-level", "WARNING", "--drain-timeout", "1s", "-e", "sleep:3s") as relay:
        started = time.monotonic()
        code, s, stderr = ingest(str(tmp_path / "docs.jsonl"), relay.url, "--batch", "32", "--timeout", "300ms",
                                 "--retries", "1", "--dead-letter", str(dead))
        took = time.monotonic() - started
    assert code == 3, stderr
    assert s["batches"]["attempts"] == 4 and s["batches"]["dead_lettered"] == 2
    assert list(s["errors"]) == ["timeout: no answer in 300 ms"]
    assert {e["reason"] for e in dead_letters(dead)} == {"timeout: no answer in 300 ms"}
    assert took < 2.9, "timed-out attempts are not waited for"


def test_a_relay_killed_and_restarted_mid_run(tmp_path: Path) -> None:
    db = tmp_path / "ids.sqlite"
    ids = write_docs(tmp_path / "docs.jsonl", 20_000)
    port = free_port()
    cmd = [*flowrelay_command(), "ingest", str(tmp_path / "docs.jsonl"), f"ws://127.0.0.1:{port}", "--batch", "50",
           "--connections", "2", "--max-inflight", "4", "--rate", "8000", "--reader", "process", "--quiet", "--json"]
    # Each batch takes 20 ms at the relay, so some of the 8 the window allows are always in flight when it
    # is killed: their failure (and retry) is what the test is about, not a lucky instant.
    relay_args = ("--log-level", "WARNING", "--port", str(port), "-e", f"record:{db}", "-e", "sleep:20ms")
    with run_relay(*relay_args) as first:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while len(recorded(db)) < 4000 and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            time.sleep(0.5)
            with run_relay(*relay_args):
                out, err = proc.communicate(timeout=CLI_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, err.decode()
    s = orjson.loads(out)
    assert s["documents"]["acknowledged"] == 20_000 and s["documents"]["dead_lettered"] == 0
    assert s["batches"]["retried"] > 0 and any(r.startswith("transport:") for r in s["errors"]), s["errors"]
    seen = recorded(db)
    assert set(seen) == ids
    # Repeats only from what was in flight when the relay died: at most the window, 2 x 4 x 50.
    assert sum(seen.values()) - len(ids) <= 2 * 4 * 50
