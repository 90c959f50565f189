"""Resuming `flowrelay ingest` after kill -9: every Document arrives, repeats stay within the in-flight bound.

The Flow is a relay whose `record:` Executor commits every id it is sent to SQLite before it answers,
counting repeats, so the file says exactly what arrived and how often. The ingest process is killed with
SIGKILL several times, at a random moment and at random points of its progress, then started again with
the same command until it finishes. Also: the checkpoint refuses another input or batch size, and a
second run on the same checkpoint, with a clear message (exit 2), and the set of settled positions
behaves as a set.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from relay_process import RelayProcess, flowrelay_command, run_relay

from loadtest.ingest.progress import Settled

N_DOCS = 100_000
BATCH = 100
CONNECTIONS = 4
MAX_INFLIGHT = 4
# What one crash can make us send twice: every batch holding a slot (in flight, or answered but not yet
# checkpointed).
REPEAT_BOUND = CONNECTIONS * MAX_INFLIGHT * BATCH
RUN_TIMEOUT_S = 60.0
SEED = 20240611


def ingest_cmd(docs: Path, url: str, ckpt: Path, dead: Path, *extra: str) -> list[str]:
    return [*flowrelay_command(), "ingest", str(docs), url, "--batch", str(BATCH), "--connections",
            str(CONNECTIONS), "--max-inflight", str(MAX_INFLIGHT), "--checkpoint", str(ckpt), "--dead-letter",
            str(dead), "--quiet", "--json", *extra]


def start(cmd: list[str], out: Path) -> subprocess.Popen[bytes]:
    """The command in the background; stdout to `out`, stderr beside it (`out` + `.err`)."""
    with out.open("wb") as fh, out.with_name(out.name + ".err").open("wb") as err:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=err)


def kill9(proc: subprocess.Popen[bytes]) -> int:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=10)


def processes_reading(path: Path) -> list[int]:
    """Live processes whose command line names `path` (an ingest of it, or its reading process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if str(path).encode() in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def settled_in(ckpt: Path) -> int:
    """Positions the checkpoint counts as settled (0 before the first one is written)."""
    try:
        state = orjson.loads(ckpt.read_bytes())
    except FileNotFoundError:
        return 0
    return int(state["watermark"]) + sum(end - begin for begin, end in state["done"])


def recorded(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, n FROM ids").fetchall())


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[RelayProcess, Path]]:
    db = tmp_path / "ids.sqlite"
    with run_relay("--log-level", "WARNING", "-e", f"record:{db}") as relay:
        yield relay, db


def generate(path: Path, n: int, rng: random.Random) -> set[str]:
    """n Documents, one in ten with an id of its own (the rest get derived ones); returns the given ids."""
    given_ids = set()
    words = ["flow", "relay", "index", "vector", "shard", "query", "token", "batch"]
    with path.open("wb") as fh:
        for i in range(n):
            doc: dict[str, Any] = {"text": f"{i} " + " ".join(rng.choices(words, k=6))}
            if i % 10 == 0:
                doc["id"] = f"given-{i}"
                given_ids.add(doc["id"])
            fh.write(orjson.dumps(doc) + b"\n")
    return given_ids


@pytest.mark.parametrize("reader", ["inline", "process"])
def test_kill_9_and_resume_delivers_everything(recorder: tuple[RelayProcess, Path], tmp_path: Path,
                                               reader: str) -> None:
    relay, db = recorder
    rng = random.Random(SEED)
    docs = tmp_path / "docs.jsonl"
    given_ids = generate(docs, N_DOCS, rng)
    ckpt, dead = tmp_path / "docs.ckpt", tmp_path / "dead.jsonl"
    cmd = ingest_cmd(docs, relay.url, ckpt, dead, "--reader", reader)
    kills = 0
    progress = [0]

    # A kill at a random moment soon after start: while starting up, or with the first batches in flight.
    proc = start(cmd, tmp_path / "run0.out")
    time.sleep(rng.uniform(0.1, 0.6))
    assert kill9(proc) == -signal.SIGKILL
    kills += 1
    progress.append(settled_in(ckpt))

    # Kills in the thick of it: each once the checkpoint has moved a random stretch past where it was.
    for k in range(1, 4):
        mark = progress[-1] + rng.uniform(0.08, 0.2) * N_DOCS
        proc = start(cmd, tmp_path / f"run{k}.out")
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while settled_in(ckpt) < mark and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.05))
        code = kill9(proc)
        assert code == -signal.SIGKILL, f"run {k} ended on its own ({code}) before the kill at {mark:.0f}:\n" + (
            tmp_path / f"run{k}.out.err").read_text()
        kills += 1
        # The checkpoint is whole after every kill (written to a temporary name, then renamed).
        progress.append(settled_in(ckpt))

    assert progress[1] <= progress[2] < progress[3] < progress[4] < N_DOCS, (
        f"each resumed run goes on from the last checkpoint: {progress}")
    # No process outlives its kill: the reading process (a fork, with the same command line) dies with it.
    time.sleep(0.2)
    assert not processes_reading(docs), "a reading process survived the kill of its sender"

    # The same command again, to the end.
    final = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT_S, check=False)
    assert final.returncode == 0, final.stderr.decode()
    summary = orjson.loads(final.stdout)
    assert summary["complete"] is True
    assert summary["resumed"]["settled_before"] == progress[-1]
    assert summary["totals"] == {"records": N_DOCS, "acknowledged": N_DOCS, "dead_lettered": 0}
    assert summary["documents"]["read"] == N_DOCS - progress[-1], "a resumed run skips what was settled"

    seen = recorded(db)
    # Exactly N distinct ids: a repeat after a crash carries the same id (derived ids are deterministic).
    assert len(seen) == N_DOCS
    assert given_ids <= set(seen)
    derived = set(seen) - given_ids
    assert len(derived) == N_DOCS - len(given_ids) and all(len(i) == 32 for i in derived)
    repeats = sum(seen.values()) - N_DOCS
    assert repeats <= kills * REPEAT_BOUND, f"{repeats} repeats after {kills} kills, bound {REPEAT_BOUND} each"
    assert max(seen.values()) <= 1 + kills
    assert dead.read_bytes() == b""

    # Once complete, the same command sends nothing.
    again = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT_S, check=False)
    assert again.returncode == 0, again.stderr.decode()
    assert orjson.loads(again.stdout)["documents"]["sent"] == 0
    assert sum(recorded(db).values()) == sum(seen.values())


def test_checkpoint_refuses_another_input_or_batch(recorder: tuple[RelayProcess, Path], tmp_path: Path) -> None:
    relay, _db = recorder
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(b"".join(orjson.dumps({"text": f"t{i}"}) + b"\n" for i in range(1000)))
    ckpt = tmp_path / "docs.ckpt"
    base = [*flowrelay_command(), "ingest"]
    common = ["--checkpoint", str(ckpt), "--quiet", "--json"]
    ok = subprocess.run([*base, str(docs), relay.url, "--batch", "50", *common], capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr.decode()

    other = tmp_path / "other.jsonl"
    other.write_bytes(docs.read_bytes() + orjson.dumps({"text": "one more"}) + b"\n")
    proc = subprocess.run([*base, str(other), relay.url, "--batch", "50", *common], capture_output=True, timeout=60)
    assert proc.returncode == 2
    message = proc.stderr.decode()
    assert "belongs to a different input" in message and str(docs) in message and str(other) in message

    proc = subprocess.run([*base, str(docs), relay.url, "--batch", "64", *common], capture_output=True, timeout=60)
    assert proc.returncode == 2
    assert "--batch 50" in proc.stderr.decode()

    # The same content under another name is the same input.
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(docs.read_bytes())
    proc = subprocess.run([*base, str(copy), relay.url, "--batch", "50", *common], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "same content" in proc.stderr.decode()


def test_one_run_per_checkpoint(recorder: tuple[RelayProcess, Path], tmp_path: Path) -> None:
    relay, _db = recorder
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(b"".join(orjson.dumps({"text": f"t{i}"}) + b"\n" for i in range(200_000)))
    ckpt = tmp_path / "docs.ckpt"
    cmd = [*flowrelay_command(), "ingest", str(docs), relay.url, "--checkpoint", str(ckpt), "--quiet", "--json",
           "--rate", "2000"]
    first = start(cmd, tmp_path / "first.out")
    try:
        deadline = time.monotonic() + 20
        while settled_in(ckpt) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = subprocess.run(cmd, capture_output=True, timeout=60)
        assert second.returncode == 2
        assert f"in use by another ingest (pid {first.pid})" in second.stderr.decode()
    finally:
        first.send_signal(signal.SIGINT)
        code = first.wait(timeout=30)
    # An interrupted run stops cleanly, resumable.
    assert code == 1
    summary = orjson.loads((tmp_path / "first.out").read_bytes())
    assert summary["outcome"].startswith("stopped: interrupted")
    # What was in flight was answered before it stopped; the checkpoint holds exactly what was acknowledged.
    assert summary["documents"]["sent"] == summary["documents"]["acknowledged"] > 0
    assert summary["totals"]["acknowledged"] == settled_in(ckpt)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 8)), max_size=40), st.integers(0, 5))
def test_settled_positions_behave_as_a_set(marks: list[tuple[int, int]], start_at: int) -> None:
    settled = Settled(watermark=start_at)
    expected = set(range(start_at))
    for begin, length in marks:
        settled.mark(begin, begin + length)
        expected |= set(range(begin, begin + length))
    assert [p for p in range(80) if settled.is_settled(p)] == sorted(expected)
    assert settled.count() == len(expected)
    # The watermark is the first gap; the ranges above it are sorted, disjoint and not touching.
    assert settled.watermark == next(p for p in range(100) if p not in expected)
    flat = [x for r in settled.ranges for x in r]
    assert flat == sorted(flat)
    assert all(end < begin for (_, end), (begin, _) in zip(settled.ranges, settled.ranges[1:], strict=False))
    again = Settled(settled.watermark, settled.to_plain()["done"])
    assert again.to_plain() == settled.to_plain()


def test_dead_letters_written_after_the_last_checkpoint_are_adopted(recorder: tuple[RelayProcess, Path],
                                                                     tmp_path: Path) -> None:
    # The state a kill -9 can leave: batch 20-29 dead-lettered (its lines in the file) after the last
    # checkpoint (which covers positions 0-19 and no byte of the dead-letter file), and a line cut short.
    from loadtest.ingest.checkpoint import encode_state
    from loadtest.ingest.readers import ReaderOptions, open_input

    relay, db = recorder
    docs, ckpt, dead = tmp_path / "docs.jsonl", tmp_path / "docs.ckpt", tmp_path / "dead.jsonl"
    docs.write_bytes(b"".join(orjson.dumps({"id": f"d{i}", "text": f"t{i}"}) + b"\n" for i in range(100)))
    inp = open_input(str(docs), ReaderOptions())
    ckpt.write_bytes(encode_state({
        "input": inp.identity(), "batch": 10, "watermark": 20, "done": [], "acknowledged": 20,
        "dead_lettered": 0, "dead_letter": {"path": str(dead.resolve()), "bytes": 0}, "complete": False,
        "records": None,
    }))
    inp.close()
    lines = [orjson.dumps({"source": str(docs), "line": p + 1, "position": p, "reason": "ValueError: earlier",
                           "attempts": 4, "document": {"id": f"d{p}", "text": f"t{p}"}}) + b"\n" for p in range(20, 30)]
    dead.write_bytes(b"".join(lines) + b'{"source": "docs.jsonl", "line": 31, "posi')

    proc = subprocess.run([*flowrelay_command(), "ingest", str(docs), relay.url, "--batch", "10", "--checkpoint",
                           str(ckpt), "--dead-letter", str(dead), "--quiet", "--json"], capture_output=True, timeout=60)
    assert proc.returncode == 3, proc.stderr.decode()
    assert "incomplete last line" in proc.stderr.decode()
    summary = orjson.loads(proc.stdout)
    assert summary["totals"] == {"records": 100, "acknowledged": 90, "dead_lettered": 10}
    assert summary["documents"]["sent"] == 70
    assert recorded(db) == {f"d{i}": 1 for i in range(30, 100)}, "neither settled stretch is sent again"
    assert dead.read_bytes() == b"".join(lines), "no duplicate, no partial line"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 200), unique=True, max_size=120), st.randoms(use_true_random=False))
def test_settling_batches_of_positions(positions: list[int], rnd: random.Random) -> None:
    settled = Settled()
    rest = list(positions)
    while rest:
        k = rnd.randint(1, 12)
        chunk, rest = rest[:k], rest[k:]
        if rnd.random() < 0.5:
            settled.mark_positions(sorted(chunk), ascending=True)  # how a batch is acknowledged
        else:
            settled.mark_positions(iter(chunk))  # any order (dead letters, adopted records)
    assert [p for p in range(220) if settled.is_settled(p)] == sorted(positions)
    assert settled.count() == len(positions)
