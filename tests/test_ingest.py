"""`flowrelay ingest` inputs: JSON Lines, CSV, TSV, folders, stdin, gzip and zstd, read as streams.

The readers are checked directly (what Documents come out, at which positions, with which ids), and
through the command against a relay that records every id it is sent (`record:`) where what matters is
what reaches the Flow: stdin, compressed inputs, malformed lines reported with file and line and set
aside while the run goes on, and `--strict`, which stops at the first one.
"""

from __future__ import annotations

import gzip
import io
import re
import sqlite3
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from relay_process import RelayProcess, flowrelay_command, run_relay

from loadtest.ingest.readers import InputError, ReaderOptions, Record, derive_id, open_input

CLI_TIMEOUT_S = 60.0
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def read_all(path: Path | str, **options: Any) -> list[Record]:
    inp = open_input(str(path), ReaderOptions(**options))
    try:
        inp.prepare()
        return list(inp.records(skip=lambda _p: False))
    finally:
        inp.close()


def write_jsonl(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    return path


def run_ingest(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*flowrelay_command(), "ingest", *args, "--quiet", "--json"],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def summary_of(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert proc.stdout.strip(), f"no summary; exit {proc.returncode}; stderr:\n{proc.stderr.decode()}"
    return orjson.loads(proc.stdout)


def recorded(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, n FROM ids").fetchall())


# ---- readers -------------------------------------------------------------------------------------


def test_jsonl_documents_positions_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_bytes(
        b'{"id": "a", "text": "first", "tags": {"lang": "en"}}\n'
        b"\n"  # blank lines are not records
        b'{"text": "second", "embedding": [1.0, 2.0]}\r\n'
        b'   {"uri": "https://example.com/x", "mime_type": "text/html"}  \n'
    )
    records = read_all(path)
    assert [(r.position, r.line) for r in records] == [(0, 1), (1, 3), (2, 4)]
    assert all(r.error is None and r.source == str(path) for r in records)
    first, second, third = (r.doc for r in records)
    assert first is not None and second is not None and third is not None
    assert (first.id, first.text, first.tags) == ("a", "first", {"lang": "en"})
    assert second.text == "second" and second.embedding is not None and second.embedding.to_list() == [1.0, 2.0]
    assert (third.uri, third.mime_type) == ("https://example.com/x", "text/html")
    assert HEX32.match(second.id or "") and HEX32.match(third.id or "")


def test_ids_are_deterministic_and_distinct(tmp_path: Path) -> None:
    same = {"text": "the very same line"}
    path = write_jsonl(tmp_path / "docs.jsonl", [same, same, {"text": "other"}, same])
    first = [r.doc.id for r in read_all(path)]  # type: ignore[union-attr]
    again = [r.doc.id for r in read_all(path)]  # type: ignore[union-attr]
    assert first == again, "a re-run must send the same ids"
    assert len(set(first)) == 4, "identical records at different positions get different ids"
    assert all(HEX32.match(i or "") for i in first)
    assert first[0] == derive_id(0, orjson.dumps(same))


def test_jsonl_malformed_lines_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "cut\n[1, 2]\n{"text": 5, "granularity": -1}\n{"text": "fine"}\n')
    records = read_all(path)
    assert [(r.position, r.line, r.error is None) for r in records] == [
        (0, 1, True), (1, 2, False), (2, 3, False), (3, 4, False), (4, 5, True)
    ]
    bad = [r for r in records if r.error]
    assert bad[0].error.startswith("not JSON") and bad[0].raw == '{"text": "cut'  # type: ignore[union-attr]
    assert "JSON object" in bad[1].error  # type: ignore[operator]
    assert "granularity" in bad[2].error  # type: ignore[operator]
    assert bad[0].where() == f"{path}:2"


def test_csv_columns(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text(
        "\ufeffkey,body,lang,extra\n"
        'k1,"hello, world",en,x\n'
        "\n"
        ',"two\nlines",de,y\n'
        "k3,short\n"
        "k4,last,fr,z\n",
        encoding="utf-8",
    )
    records = read_all(path, text_column="body", id_column="key", tags_columns=("lang",))
    assert [(r.position, r.line) for r in records] == [(0, 2), (1, 4), (2, 6), (3, 7)]
    ok = [r.doc for r in records if r.doc is not None]
    assert [(d.id, d.text, d.tags) for d in ok[:1]] == [("k1", "hello, world", {"lang": "en"})]
    assert ok[1].text == "two\nlines" and HEX32.match(ok[1].id or ""), "an empty id cell gets a derived id"
    assert ok[2].id == "k4"
    assert records[2].error == "2 fields where the header has 4" and records[2].where() == f"{path}:6"


def test_tsv_and_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "docs.tsv"
    path.write_text("text\tid\nalpha\t1\nbeta\t2\n")
    assert [(r.doc.text, r.doc.id) for r in read_all(path, id_column="id")] == [  # type: ignore[union-attr]
        ("alpha", "1"), ("beta", "2")
    ]
    with pytest.raises(InputError, match="no column 'body'"):
        read_all(path, text_column="body")


def test_csv_invalid_utf8_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_bytes(b"text\ngood\nbad \xff byte\nalso good\n")
    records = read_all(path)
    assert [r.error for r in records] == [None, "not valid UTF-8", None]
    assert records[1].line == 3


def test_folder_walk_is_sorted_and_deterministic(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    for rel, body in {"b.txt": b"bee", "a/z.json": b"{}", "a/c.html": b"<p>", "A.txt": b"upper"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    records = read_all(root)
    uris = [r.doc.uri for r in records]  # type: ignore[union-attr]
    base = root.resolve()
    assert uris == [str(base / "A.txt"), str(base / "a/c.html"), str(base / "a/z.json"), str(base / "b.txt")]
    assert records[1].doc.mime_type == "text/html"  # type: ignore[union-attr]
    assert all(r.doc.blob is None for r in records)  # type: ignore[union-attr]
    with_blobs = read_all(root, read_blobs=True)
    assert [r.doc.blob for r in with_blobs] == [b"upper", b"<p>", b"{}", b"bee"]  # type: ignore[union-attr]
    assert [r.doc.id for r in read_all(root)] == [r.doc.id for r in records]  # type: ignore[union-attr]


@pytest.mark.parametrize("compress", ["gz", "zst"])
def test_compressed_inputs_read_like_plain(tmp_path: Path, compress: str) -> None:
    docs = [{"text": f"document {i}"} for i in range(500)]
    plain = write_jsonl(tmp_path / "docs.jsonl", docs)
    data = plain.read_bytes()
    packed = tmp_path / f"docs.jsonl.{compress}"
    if compress == "gz":
        packed.write_bytes(gzip.compress(data))
    else:
        # Two frames, as a parallel compressor writes them.
        c = zstandard.ZstdCompressor()
        packed.write_bytes(c.compress(data[: len(data) // 2]) + c.compress(data[len(data) // 2 :]))
    expected = [(r.position, r.line, r.doc.id, r.doc.text) for r in read_all(plain)]  # type: ignore[union-attr]
    got = [(r.position, r.line, r.doc.id, r.doc.text) for r in read_all(packed)]  # type: ignore[union-attr]
    assert got == expected


def test_truncated_or_corrupt_gzip_is_a_read_error(tmp_path: Path) -> None:
    from loadtest.ingest.readers import InputReadError

    data = gzip.compress(b"".join(orjson.dumps({"text": f"t{i}"}) + b"\n" for i in range(2000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputReadError, match=r"cut\.jsonl\.gz"):
        read_all(path)
    corrupt = bytearray(data)
    corrupt[200:260] = bytes(b ^ 0xFF for b in corrupt[200:260])
    path.write_bytes(bytes(corrupt))
    with pytest.raises(InputReadError, match="reading stopped"):
        read_all(path)


def test_reading_is_streaming(tmp_path: Path) -> None:
    # 60,000 records of ~200 bytes (12 MB): what reading holds at once must not depend on that.
    path = tmp_path / "big.jsonl"
    with path.open("wb") as fh:
        for i in range(60_000):
            fh.write(orjson.dumps({"text": f"{i:08d} " + "x" * 180}) + b"\n")
    inp = open_input(str(path), ReaderOptions())
    tracemalloc.start()
    try:
        count = sum(1 for _ in inp.records(skip=lambda _p: False))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        inp.close()
    assert count == 60_000
    assert peak < 4 * 1024 * 1024, f"reading held {peak / 1e6:.1f} MB at its peak for a 12 MB input"


def test_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_input(str(tmp_path / "missing.jsonl"), ReaderOptions())
    odd = tmp_path / "docs.parquet"
    odd.write_bytes(b"x")
    with pytest.raises(InputError, match="--format"):
        open_input(str(odd), ReaderOptions())
    with pytest.raises(InputError, match="--read-blobs"):
        open_input(str(odd), ReaderOptions(format="jsonl", read_blobs=True))


def test_stdin_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b'{"text": "one"}\n{"text": "two"}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(data))))
    inp = open_input("-", ReaderOptions())
    ident = inp.identity()  # the head is read for the checkpoint and then served again
    assert ident["kind"] == "stdin"
    assert [r.doc.text for r in inp.records(skip=lambda _p: False)] == ["one", "two"]  # type: ignore[union-attr]
    assert inp.display == "<stdin>"


# ---- through the command -------------------------------------------------------------------------


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[RelayProcess, Path]]:
    db = tmp_path / "ids.sqlite"
    with run_relay("--log-level", "WARNING", "-e", f"record:{db}") as relay:
        yield relay, db


@pytest.mark.parametrize("reader", ["inline", "process"])
def test_stdin_compressed_into_a_flow(recorder: tuple[RelayProcess, Path], tmp_path: Path, reader: str) -> None:
    relay, db = recorder
    docs = [{"id": f"s{i}", "text": f"stdin {i}"} for i in range(1000)]
    data = zstandard.ZstdCompressor().compress(b"".join(orjson.dumps(d) + b"\n" for d in docs))
    proc = run_ingest("-", relay.url, "--batch", "64", "--checkpoint", str(tmp_path / "ck"), "--reader", reader,
                      stdin=data)
    assert proc.returncode == 0, proc.stderr.decode()
    summary = summary_of(proc)
    assert summary["input"]["name"] == "<stdin>"
    assert summary["documents"]["acknowledged"] == 1000
    assert recorded(db) == {f"s{i}": 1 for i in range(1000)}


def test_csv_into_a_flow_with_derived_ids(recorder: tuple[RelayProcess, Path], tmp_path: Path) -> None:
    relay, db = recorder
    path = tmp_path / "docs.csv.gz"
    rows = "".join(f"{i},text number {i},{i % 3}\n" for i in range(300))
    path.write_bytes(gzip.compress(("n,body,group\n" + rows).encode()))
    args = (str(path), relay.url, "--text-column", "body", "--tags-columns", "group,n", "--batch", "50")
    proc = run_ingest(*args)
    assert proc.returncode == 0, proc.stderr.decode()
    first = recorded(db)
    assert len(first) == 300 and all(HEX32.match(i) for i in first)
    proc = run_ingest(*args)  # no checkpoint: everything again, under the same ids
    assert proc.returncode == 0, proc.stderr.decode()
    assert recorded(db) == dict.fromkeys(first, 2)


@pytest.mark.parametrize("reader", ["inline", "process"])
def test_malformed_lines_are_reported_and_set_aside(recorder: tuple[RelayProcess, Path], tmp_path: Path,
                                                     reader: str) -> None:
    relay, db = recorder
    path = tmp_path / "docs.jsonl"
    lines = [orjson.dumps({"id": f"d{i}", "text": f"t{i}"}).decode() for i in range(100)]
    lines[10] = '{"id": "d10", "text": '
    lines[57] = '"just a string"'
    path.write_text("\n".join(lines) + "\n")
    dead = tmp_path / "dead.jsonl"
    proc = run_ingest(str(path), relay.url, "--batch", "8", "--dead-letter", str(dead), "--reader", reader)
    stderr = proc.stderr.decode()
    assert proc.returncode == 3, stderr  # complete, with dead letters
    assert f"{path}:11: not JSON" in stderr and f"{path}:58: not a Document" in stderr
    summary = summary_of(proc)
    assert summary["complete"] is True
    assert summary["documents"] == {
        "read": 100, "malformed": 2, "sent": 98, "acknowledged": 98, "failed": 0, "retried": 0,
        "dead_lettered": 2, "unsettled": 0,
    }
    entries = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert [(e["source"], e["line"], e["position"], e["attempts"], e["document"]) for e in entries] == [
        (str(path), 11, 10, 0, None), (str(path), 58, 57, 0, None)
    ]
    assert entries[0]["raw"] == '{"id": "d10", "text":' and entries[0]["reason"].startswith("not JSON")
    assert set(recorded(db)) == {f"d{i}" for i in range(100)} - {"d10", "d57"}


@pytest.mark.parametrize("reader", ["inline", "process"])
def test_strict_stops_at_the_first_malformed_line(recorder: tuple[RelayProcess, Path], tmp_path: Path,
                                                  reader: str) -> None:
    relay, db = recorder
    path = tmp_path / "docs.jsonl"
    lines = [orjson.dumps({"id": f"d{i}", "text": f"t{i}"}).decode() for i in range(200)]
    lines[45] = "{oops"
    path.write_text("\n".join(lines) + "\n")
    dead = tmp_path / "dead.jsonl"
    proc = run_ingest(str(path), relay.url, "--batch", "10", "--strict", "--dead-letter", str(dead), "--reader",
                      reader)
    assert proc.returncode == 4, proc.stderr.decode()
    assert f"{path}:46: not JSON" in proc.stderr.decode()
    summary = summary_of(proc)
    assert summary["complete"] is False and "--strict" in summary["outcome"]
    seen = recorded(db)
    assert set(seen) <= {f"d{i}" for i in range(45)}, "nothing after the malformed line is sent"
    assert {f"d{i}" for i in range(40)} <= set(seen), "the batches before it are delivered"
    assert dead.read_bytes() == b""


def test_usage_errors_exit_2_before_traffic(recorder: tuple[RelayProcess, Path], tmp_path: Path) -> None:
    relay, db = recorder
    csv_path = tmp_path / "docs.csv"
    csv_path.write_text("title\nx\n")
    for args, message in [
        ((str(tmp_path / "nope.jsonl"), relay.url), "no such file"),
        ((str(csv_path), relay.url), "no column 'text'"),
        ((str(csv_path), "http://127.0.0.1:1"), "expected ws://HOST:PORT"),
        ((str(csv_path), relay.url, "--batch", "0"), "--batch must be >= 1"),
    ]:
        proc = run_ingest(*args)
        assert proc.returncode == 2, (args, proc.stderr.decode())
        assert message in proc.stderr.decode()
    assert recorded(db) == {}


def test_progress_line_and_summary_json(recorder: tuple[RelayProcess, Path], tmp_path: Path) -> None:
    relay, _db = recorder
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": f"t{i}"} for i in range(2500)])
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(
        [*flowrelay_command(), "ingest", str(path), relay.url, "--rate", "1000", "--batch", "50",
         "--summary-json", str(summary_path)],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=CLI_TIMEOUT_S, check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    progress = [line for line in proc.stderr.decode().splitlines() if line.startswith("ingest ")]
    assert len(progress) >= 2, proc.stderr.decode()  # about one a second over a 2.5 s run, and the last
    pattern = re.compile(r"done ([\d,]+) \(acked [\d,]+, dead 0\)\s+([\d,]+) docs/s\s+[\d.]+%\s+ETA \S+\s+in flight "
                         r"\d+\s+errors 0\s+retries 0")
    matches = [pattern.search(line) for line in progress]
    assert all(matches), progress
    assert int(matches[-1].group(1).replace(",", "")) == 2500  # type: ignore[union-attr]
    assert 500 <= int(matches[0].group(2).replace(",", "")) <= 1500, progress[0]  # paced at 1,000/s
    text = proc.stdout.decode()
    assert "acknowledged 2,500" in text and "outcome      complete: every document acknowledged" in text
    summary = orjson.loads(summary_path.read_bytes())
    assert summary["documents"]["acknowledged"] == 2500 and summary["exit_code"] == 0
    assert 2.0 <= summary["duration_s"] <= 4.0, "paced at 1,000 documents/s"
