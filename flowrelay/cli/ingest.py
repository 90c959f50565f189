"""The `flowrelay ingest` verb: flags -> IngestConfig -> run -> summary and exit code (see run.py for the codes).

    flowrelay ingest docs.jsonl ws://127.0.0.1:12345 --endpoint /index --batch 32 --connections 4 \\
        --rate 2000 --checkpoint docs.ckpt --dead-letter failed.jsonl

Imports the ingest modules and relay.common (loop, units).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from flowrelay.cli.cluster_options import ClusterUsageError, add_cluster_arguments, bind_address, cluster_options
from flowrelay.cli.options import parse_params
from loadtest.ingest.checkpoint import write_atomic
from loadtest.ingest.delivery import DeliveryConfig
from loadtest.ingest.readers import FORMATS, ReaderOptions
from loadtest.ingest.report import format_summary
from loadtest.ingest.run import EXIT_INCOMPLETE, EXIT_USAGE, IngestConfig, UsageError, run_ingest
from relay.common.loop import describe_error
from relay.common.units import parse_duration

DESCRIPTION = """\
Send a user's Documents from files into a Flow: once, to the end, nothing lost. Batches go over persistent
WebSocket sessions, bounded in flight, optionally paced; a failed batch is retried with backoff, then set
aside in the dead-letter file with its reason. With --checkpoint, progress is recorded durably, so a run
killed at any moment resumes where it stopped when started again with the same command: every Document is
delivered at least once, and the only repeats after a crash are the batches that were in flight, with the
same ids. Exit codes: 0 all acknowledged; 3 all acknowledged or dead-lettered (some were); 1 could not
run or stopped before the end (resumable); 2 usage; 4 a malformed record with --strict."""


def add_ingest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="a JSON Lines, CSV or TSV file (.gz and .zst too), a folder, or - for stdin")
    p.add_argument("target", help="ws://HOST:PORT of a Flow or relay")
    g = p.add_argument_group("input")
    g.add_argument("--format", choices=FORMATS, help="default: from the name (.jsonl/.ndjson/.json, .csv, .tsv); "
                   "a folder is a folder; stdin is jsonl")
    g.add_argument("--text-column", default="text", help="CSV/TSV: the column that becomes `text` (default text)")
    g.add_argument("--id-column", help="CSV/TSV: the column that becomes `id` (default: a derived id)")
    g.add_argument("--tags-columns", metavar="A,B", help="CSV/TSV: columns that become `tags`")
    g.add_argument("--read-blobs", action="store_true", help="folder: put each file's bytes in `blob`")
    g.add_argument("--strict", action="store_true",
                   help="stop at the first malformed record (exit 4) instead of dead-lettering it")
    g = p.add_argument_group("delivery")
    g.add_argument("--endpoint", default="/", help="execEndpoint of every request (default /)")
    g.add_argument("--target-executor", help="targetExecutor regex")
    g.add_argument("--param", action="append", metavar="KEY=JSON", help="a request parameter (repeatable)")
    g.add_argument("--subprotocol", choices=["bytes", "json", "none"], default="bytes",
                   help="what to offer (default bytes)")
    g.add_argument("--batch", type=int, default=32, help="Documents per request (default 32)")
    g.add_argument("--connections", type=int, default=2, help="persistent WebSocket sessions (default 2)")
    g.add_argument("--max-inflight", type=int, default=16,
                   help="batches in flight per connection (default 16); connections x max-inflight x batch "
                   "bounds memory and the Documents a crash can make us send twice")
    g.add_argument("--rate", type=float, help="at most this many Documents per second (default: as fast as the "
                   "Flow answers)")
    g.add_argument("--timeout", default="30s", help="an attempt unanswered this long has failed (default 30s)")
    g.add_argument("--retries", type=int, default=3, help="attempts after the first before a batch is "
                   "dead-lettered (default 3)")
    g.add_argument("--offline-limit", default="60s",
                   help="stop (resumably, exit 1) after this long without any connection (default 60s)")
    g.add_argument("--grace", default="10s", help="when stopping early, how long to wait for answers in flight")
    g.add_argument("--reader", choices=["auto", "process", "inline"], default="auto",
                   help="read, parse and encode in a process of its own, ahead of the sender, or inline in the "
                   "sending loop; auto (default): a process when the machine has a second core")
    g = p.add_argument_group("durability and output")
    g.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="record progress here (durably) and resume from it when it exists")
    g.add_argument("--dead-letter", type=Path, metavar="FILE",
                   help="JSON Lines file for Documents that cannot be delivered (without it, the first such "
                   "batch or malformed record stops the run)")
    g.add_argument("--summary-json", type=Path, metavar="PATH", help="write the summary as JSON here")
    g.add_argument("--json", action="store_true", help="print the summary as JSON on stdout instead of text")
    g.add_argument("--quiet", action="store_true", help="no progress line")


def _duration(value: str, flag: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def config_from_args(args: argparse.Namespace) -> IngestConfig:
    """The run's configuration; raises UsageError."""
    parts = urlsplit(args.target)
    if parts.scheme not in ("ws", "wss") or not parts.hostname or not parts.port:
        raise UsageError(f"target {args.target!r}: expected ws://HOST:PORT")
    for flag, value, low in (("--batch", args.batch, 1), ("--connections", args.connections, 1),
                             ("--max-inflight", args.max_inflight, 1), ("--retries", args.retries, 0)):
        if value < low:
            raise UsageError(f"{flag} must be >= {low}")
    if args.rate is not None and not args.rate > 0:
        raise UsageError("--rate must be > 0 (Documents per second)")
    timeout_s = _duration(args.timeout, "--timeout")
    if timeout_s <= 0:
        raise UsageError("--timeout must be > 0")
    try:
        params = parse_params(args.param or [], 'traversal_paths="@r"')
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    tags = tuple(c.strip() for c in (args.tags_columns or "").split(",") if c.strip())
    if args.checkpoint is not None and args.dead_letter is not None and \
            args.checkpoint.resolve() == args.dead_letter.resolve():
        raise UsageError("--checkpoint and --dead-letter must be different files")
    return IngestConfig(
        input=args.input,
        reader=ReaderOptions(format=args.format, text_column=args.text_column, id_column=args.id_column,
                             tags_columns=tags, read_blobs=args.read_blobs),
        delivery=DeliveryConfig(
            target=args.target,
            subprotocol=args.subprotocol,
            endpoint=args.endpoint,
            target_executor=args.target_executor,
            parameters=params,
            batch=args.batch,
            connections=args.connections,
            max_inflight=args.max_inflight,
            rate=args.rate,
            timeout_s=timeout_s,
            retries=args.retries,
            strict=args.strict,
            grace_s=_duration(args.grace, "--grace"),
            offline_limit_s=_duration(args.offline_limit, "--offline-limit"),
        ),
        checkpoint=args.checkpoint,
        dead_letter=args.dead_letter,
        progress=not args.quiet,
        read_in=args.reader,
    )


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
        cluster = cluster_options(args)
        if cluster is not None:
            if args.input == "-":
                raise UsageError("stdin cannot be split over workers: give a file or a folder")
            from loadtest.cluster.ingest_run import run_shard

            return run_shard(cfg, cluster, bind_address(cluster, args.coordinator_bind), args.summary_json,
                             bool(args.json))
        result = run_ingest(cfg)
    except (UsageError, ClusterUsageError) as exc:
        print(f"flowrelay ingest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before the run started (once it runs, SIGINT stops it cleanly)
        print("flowrelay ingest: interrupted", file=sys.stderr)
        return EXIT_INCOMPLETE
    except Exception as exc:  # a background task or a bug ended the run (what settled is durable): a crash
        traceback.print_exc()
        print(f"flowrelay ingest: the run crashed: {describe_error(exc)}; run the same command to resume",
              file=sys.stderr)
        return EXIT_INCOMPLETE
    summary = result.summary
    if args.summary_json is not None:
        try:
            write_atomic(args.summary_json, orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        except OSError as exc:
            print(f"flowrelay ingest: cannot write {args.summary_json}: {exc}", file=sys.stderr)
    if args.json:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_summary(summary))
    if result.exit_code not in (0, 3):
        print(f"flowrelay ingest: {summary['outcome']}", file=sys.stderr)
    return result.exit_code


def register(sub: Any) -> dict[str, Any]:
    """Add `ingest` to the `flowrelay` command."""
    p = sub.add_parser(
        "ingest",
        help="send Documents from files into a Flow: nothing lost, resumable",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_ingest_arguments(p)
    add_cluster_arguments(p)
    return {"ingest": run}
