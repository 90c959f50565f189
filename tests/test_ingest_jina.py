"""`flowrelay ingest` into a real Jina 3.34 Flow (`gateway -> upper -> sleeper`, sleeper at 2 ms).

A few thousand Documents, batches over persistent sessions, every batch acknowledged by Jina's own
gateway, in the bytes subprotocol (answers matched by request id) and in json (matched through the
gateway's echo of `parameters`). On `/fail`, where Jina's Executor raises, the batches are dead-lettered
with the reason Jina's gateway reported. Needs the Jina peer venv (scripts/setup_peer.sh).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from jina_peer import RunningFlow
from relay_process import flowrelay_command

pytestmark = pytest.mark.jina

N_DOCS = 3000


def ingest(*args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([*flowrelay_command(), "ingest", *args, "--quiet", "--json"], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=90, check=False)
    stderr = proc.stderr.decode()
    assert proc.stdout.strip(), f"no summary; exit {proc.returncode}:\n{stderr}"
    return proc.returncode, orjson.loads(proc.stdout), stderr


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ingest") / "docs.jsonl"
    with path.open("wb") as fh:
        for i in range(N_DOCS):
            doc: dict[str, Any] = {"text": f"document {i} for the index", "tags": {"n": i}}
            if i % 2:
                doc["id"] = f"doc-{i}"
            fh.write(orjson.dumps(doc) + b"\n")
    return path


@pytest.mark.parametrize("subprotocol", ["bytes", "json"])
def test_all_acknowledged_by_jina(jina_flow: RunningFlow, docs: Path, tmp_path: Path, subprotocol: str) -> None:
    code, s, stderr = ingest(str(docs), jina_flow.url, "--endpoint", "/index", "--subprotocol", subprotocol,
                             "--batch", "32", "--connections", "2", "--max-inflight", "8",
                             "--checkpoint", str(tmp_path / "ck"), "--dead-letter", str(tmp_path / "dead.jsonl"))
    assert code == 0, stderr
    d, b = s["documents"], s["batches"]
    assert d["read"] == d["sent"] == d["acknowledged"] == N_DOCS
    assert b["sent"] == b["acknowledged"] == b["attempts"] == -(-N_DOCS // 32)
    assert b["failed"] == 0 and s["errors"] == {}
    assert s["complete"] and s["totals"] == {"records": N_DOCS, "acknowledged": N_DOCS, "dead_lettered": 0}
    assert (tmp_path / "dead.jsonl").read_bytes() == b""


def test_jina_executor_errors_are_dead_lettered(jina_flow: RunningFlow, docs: Path, tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    code, s, stderr = ingest(str(docs), jina_flow.url, "--endpoint", "/fail", "--batch", "500", "--retries", "1",
                             "--dead-letter", str(dead))
    assert code == 3, stderr
    assert s["batches"]["attempts"] == 12 and s["batches"]["dead_lettered"] == 6
    assert s["documents"]["dead_lettered"] == N_DOCS and s["documents"]["acknowledged"] == 0
    entries = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert len(entries) == N_DOCS
    assert all(e["attempts"] == 2 for e in entries)
    assert {e["reason"] for e in entries} == {"ValueError: deliberate failure from UpperExec on /fail (in UpperExec)"}
