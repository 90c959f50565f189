"""The short road for JSON Lines in bytes mode (`prepare_jsonl_bytes`) against the general one
(`prepare_items` over the readers' Records): the same items in the same order, the same positions and
lines, the same frames byte for byte, the same malformed records with the same reasons, on a varied
input (plain lines, ids or none, tags, unusual fields, numbers for strings, bad JSON, blank lines, a
BOM, CRLF) at several batch sizes and when resuming. And the reading process's item encoding, and the
ids, which a resumed run must derive as earlier runs did.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from loadtest.ingest.prepare import (
    End,
    Failed,
    Malformed,
    Prepared,
    RequestShape,
    prepare_input,
    prepare_items,
)
from loadtest.ingest.readers import ReaderOptions, derive_id, open_input
from loadtest.ingest.sources import pack_item, unpack_item
from loadtest.payloads import ID_WIDTH

RID = "r" * ID_WIDTH
CYCLE = 300


def varied_lines(n: int) -> list[bytes]:
    lines: list[bytes] = []
    for i in range(n):
        kind = i % CYCLE  # a few odd records, then long runs of plain ones: both roads are taken
        if kind == 13:
            lines.append(b"{not json")
        elif kind == 29:
            lines.append(b"")
        elif kind == 31:
            lines.append(b"   \t")
        elif kind == 41:
            lines.append(orjson.dumps({"text": ["not", "a", "string"]}))
        elif kind in (43, 70, 200):
            lines.append(orjson.dumps({"text": f"t{i}", "tags": {"i": i, "s": "x", "l": [1, None]}}))
        elif kind == 37:
            lines.append(orjson.dumps({"text": f"t{i}", "tags": {}}))
        elif kind == 47:
            lines.append(orjson.dumps({"text": i}))
        elif kind == 53:
            lines.append(orjson.dumps({"text": f"e{i}", "embedding": [0.5, i]}))
        elif kind == 59:
            lines.append(orjson.dumps({"id": "", "text": f"t{i}"}) + b"\r")
        elif kind == 61:
            lines.append(b"  " + orjson.dumps({"id": None, "text": f"t{i}"}) + b"  ")
        elif 100 <= kind < 180:
            lines.append(orjson.dumps({"id": f"own-{i}", "text": f"t{i}", "uri": f"u{i}"}))
        else:
            lines.append(orjson.dumps({"text": f"t{i}"}))
    return lines


def write(path: Path, lines: list[bytes], bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n")
    return path


def normalized(items: list[Any]) -> list[tuple[Any, ...]]:
    """What a user sees of each item: its kind, positions and lines, frame (with a fixed request id),
    what reading had gone through; a malformed record's place and reason."""
    out: list[tuple[Any, ...]] = []
    for item in items:
        if isinstance(item, Prepared):
            out.append(("batch", list(item.positions), list(item.lines), item.frame(RID), item.read))
        elif isinstance(item, Malformed):
            r = item.record
            out.append(("malformed", r.position, r.line, r.error, r.raw, item.read))
        elif isinstance(item, End):
            out.append(("end", item.read))
        else:
            assert isinstance(item, Failed)
            out.append(("failed", item.message))
    return out


def both_roads(path: Path, batch: int, shape: RequestShape, settled: set[int] | None = None,
               below: int | None = None) -> tuple[list[Any], list[Any]]:
    skip = (lambda p: p in settled) if settled else (lambda _p: False)
    fast_in = open_input(str(path), ReaderOptions())
    general_in = open_input(str(path), ReaderOptions())
    try:
        fast = list(prepare_input(fast_in, skip, below, batch, shape))
        general = list(prepare_items(general_in, general_in.records(skip=skip, skip_below=below), batch, shape))
    finally:
        fast_in.close()
        general_in.close()
    return normalized(fast), normalized(general)


@pytest.mark.parametrize("batch", [1, 7, 32])
def test_short_road_gives_the_general_roads_items_and_frames(tmp_path: Path, batch: int) -> None:
    path = write(tmp_path / "docs.jsonl", varied_lines(3 * CYCLE), bom=True)
    fast, general = both_roads(path, batch, RequestShape("bytes", "/index", "upper", {"p": 1, "q": "x"}))
    assert fast == general
    kinds = {item[0] for item in fast}
    assert kinds == {"batch", "malformed", "end"}
    assert sum(1 for item in fast if item[0] == "malformed") == 2 * 3  # bad JSON and a list for text


def test_short_road_when_resuming_skips_the_same_records(tmp_path: Path) -> None:
    path = write(tmp_path / "docs.jsonl", varied_lines(2 * CYCLE))
    settled = set(range(0, 100)) | set(range(130, 170)) | {201, 205}
    fast, general = both_roads(path, 32, RequestShape(), settled, below=206)
    assert fast == general
    sent = [p for item in fast if item[0] == "batch" for p in item[1]]
    assert not settled & set(sent) and 100 in sent and 206 in sent


def test_large_input_read_in_blocks_numbers_every_line(tmp_path: Path) -> None:
    # Several read blocks, lines cut at block edges.
    lines = [orjson.dumps({"text": "x" * (i % 300)}) for i in range(20_000)]
    path = write(tmp_path / "docs.jsonl", lines)
    fast, general = both_roads(path, 32, RequestShape())
    assert fast == general
    assert fast[-1] == ("end", 20_000)


def test_ids_are_derived_as_before() -> None:
    # The scheme a checkpoint written by earlier versions relies on: blake2b-128 of "<position>\0<text>".
    body = b'{"text":"same"}'
    assert derive_id(12, body) == hashlib.blake2b(b"12\x00" + body, digest_size=16).hexdigest()
    assert derive_id(12, body) != derive_id(13, body)


def test_reading_process_item_encoding_round_trips() -> None:
    batch = Prepared([3, 4, 5], [7, 8, 9], b"pre", b"suf", None, 6, 100)
    back = unpack_item(pack_item(batch))
    assert isinstance(back, Prepared)
    assert (list(back.positions), list(back.lines), back.prefix, back.suffix, back.read, back.bytes_read) == \
        ([3, 4, 5], [7, 8, 9], b"pre", b"suf", 6, 100)
    gappy = Prepared([3, 5], [7, 9], b"p", b"s", ["a", "b"], 6, 100)
    assert unpack_item(pack_item(gappy)) == gappy
    assert unpack_item(pack_item(End(10, 20))) == End(10, 20)
