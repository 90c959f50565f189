"""The `flowrelay record` verb: recordings outside the relay.

    flowrelay record import FILE.har --out DIR [--redact FIELDS]   a browser's HAR export as a recording
    flowrelay record info DIR [--full] [--json]                    what a recording holds (while it grows, too)

A recording is what `flowrelay serve --record DIR` writes and `flowrelay load URL --replay DIR` replays
(relay.capture). `info` reads the index only, so it is instant on a recording of any size and follows one that a
relay is still writing; `--full` reads the records too (connections by door, endpoints, answers, torn frames).

Exit codes: 0 done; 1 the recording could not be written; 2 a usage error (not a HAR file, not a recording, a
folder that already holds a recording).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from relay.capture.format import META_FILE
from relay.capture.har import HarError, import_har
from relay.capture.reader import RecordingError, read_index, read_meta, read_recording
from relay.capture.redact import RedactError, Redactor, parse_fields
from relay.capture.writer import RecordingExists

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _import(args: argparse.Namespace) -> int:
    try:
        redactor = Redactor(parse_fields(args.redact)) if args.redact else None
        imported = import_har(args.har, args.out, redactor)
    except (HarError, RedactError, RecordingExists) as exc:
        print(f"flowrelay record import: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"flowrelay record import: cannot write {args.out}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"imported {imported.requests} requests ({imported.answers} with their answers) on "
          f"{imported.connections} connection(s) from {args.har} into {args.out}/")
    for reason, n in sorted(imported.skipped.items()):
        print(f"  left out {n}: {reason}")
    return EXIT_OK


def _when(wall_ns: float | None) -> str | None:
    if wall_ns is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall_ns / 1e9)) + f".{int(wall_ns % 1e9) // 1_000_000:03d}Z"


def describe(folder: Path, full: bool = False) -> dict[str, Any]:
    """What `info` reports: from recording.json and the index (and, with `full`, from the records)."""
    meta = read_meta(folder) if folder.is_dir() else {}
    if folder.is_dir() and not (folder / META_FILE).exists():
        raise RecordingError(f"{folder}: not a recording folder (no {META_FILE})")
    index = read_index(folder) if folder.is_dir() else []
    requests = sum(e["requests"] for e in index)
    # Frames are written at most about half a second after their requests arrived.
    with_requests = [e for e in index if e.get("requests")]
    info: dict[str, Any] = {
        "folder": str(folder),
        "recorded_by": meta.get("recorded_by", meta.get("source")),
        "started_at": meta.get("started_at"),
        "ended_at": meta.get("ended_at"),
        "complete": "ended_at" in meta,
        "sample": meta.get("sample"),
        "redacted": meta.get("redacted", []),
        "latency": meta.get("latency"),
        "segments": len({e["segment"] for e in index}),
        "frames": len(index),
        "requests": requests,
        "answers": sum(e["answers"] for e in index),
        "compressed_bytes": sum(e["length"] for e in index),
        "first_frame_at": _when(with_requests[0]["wall_ns"]) if with_requests else None,
        "last_frame_at": _when(with_requests[-1]["wall_ns"]) if with_requests else None,
    }
    if full:
        recording = read_recording(folder)
        doors = collections.Counter(f"{c.door}/{c.subprotocol}" for c in recording.connections.values())
        endpoints = collections.Counter(r.endpoint for r in recording.requests)
        errors = collections.Counter(r.answer.error for r in recording.requests if r.answer and r.answer.is_error)
        info.update(
            requests=len(recording.requests),
            answers=recording.answered,
            connections=dict(doors),
            endpoints=dict(endpoints.most_common()),
            errors=dict(errors.most_common()),
            torn_frames=recording.torn_frames,
            orphan_answers=recording.orphan_answers,
        )
    return info


def _info(args: argparse.Namespace) -> int:
    try:
        info = describe(args.recording, args.full)
    except RecordingError as exc:
        print(f"flowrelay record info: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    state = "complete" if info["complete"] else "still being written (or its relay did not stop cleanly)"
    print(f"recording   {info['folder']}  ({state})")
    print(f"recorded    by {info['recorded_by'] or '?'}, from {info['started_at']} to {info['ended_at'] or '-'}; "
          f"sample {info['sample'] if info['sample'] is not None else '-'}; redacted "
          f"{', '.join(info['redacted']) or 'nothing'}")
    print(f"requests    {info['requests']} ({info['answers']} answers), written from {info['first_frame_at'] or '-'} "
          f"to {info['last_frame_at'] or '-'}")
    print(f"stored      {info['segments']} segment(s), {info['frames']} frame(s), "
          f"{info['compressed_bytes'] / 1e6:.2f} MB compressed")
    if args.full:
        print(f"connections {', '.join(f'{k} {v}' for k, v in info['connections'].items())}")
        print(f"endpoints   {', '.join(f'{k} {v}' for k, v in info['endpoints'].items())}")
        if info["errors"]:
            print(f"errors      {', '.join(f'{k} {v}' for k, v in info['errors'].items())}")
        if info["torn_frames"]:
            print(f"torn        {info['torn_frames']} frame(s) cut short (a relay killed while writing)")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    if args.record_action == "import":
        return _import(args)
    if args.record_action == "info":
        return _info(args)
    args.record_parser.print_help()
    return EXIT_USAGE


def register(sub: Any) -> dict[str, Any]:
    """Add `record` to the `flowrelay` command."""
    p = sub.add_parser(
        "record",
        help="import a browser's HAR as a recording, or describe a recording",
        description="Recordings are what `flowrelay serve --record DIR` writes and `flowrelay load URL --replay DIR` "
        "replays.",
    )
    p.set_defaults(record_parser=p)
    actions = p.add_subparsers(dest="record_action", metavar="ACTION")
    imp = actions.add_parser("import", help="a HAR file (Chrome DevTools: Save all as HAR with content) as a recording",
                             description="Turn a browser's HAR export into a recording: each WebSocket connection "
                             "(its frames in _webSocketMessages) and the HTTP data requests (POST /post, /index, ...).")
    imp.add_argument("har", type=Path, metavar="FILE.har")
    imp.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new folder for the recording")
    imp.add_argument("--redact", metavar="FIELDS", help="replace these fields by a keyed hash of the same length, "
                     "e.g. tags.email,text")
    info = actions.add_parser("info", help="what a recording holds",
                              description="Describe a recording from its index (instant, even while a relay writes "
                              "it); --full reads the records as well.")
    info.add_argument("recording", type=Path, metavar="DIR")
    info.add_argument("--full", action="store_true", help="read every record: connections, endpoints, errors")
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    return {"record": run}
