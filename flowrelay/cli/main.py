"""The `flowrelay` command: one CLI, a verb per job, each in a module of its own beside this one.

    serve    flowrelay.cli.serve     a relay with built-in Executors, or in front of a real Flow
    load     flowrelay.cli.load      a load test of a Flow (or relay)
    ingest   flowrelay.cli.ingest    Documents from files into a Flow, nothing lost, resumable
    report   flowrelay.cli.report    a results folder as one HTML page, or two compared
    record   flowrelay.cli.record    a browser's HAR as a recording; what a recording holds
    demo     flowrelay.cli.demo      a relay and a short load test against it, for a first run

The CLI knows both halves (relay/ and loadtest/); neither knows it. Usage errors exit 2 with a message,
before any traffic.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from flowrelay import __version__
from flowrelay.cli import demo, ingest, load, record, report, serve

EXIT_USAGE = 2

Verb = Callable[[argparse.Namespace], int]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Verb]]:
    parser = argparse.ArgumentParser(
        prog="flowrelay",
        description="A Jina-compatible WebSocket relay, and a load tester for Jina Flows.",
    )
    parser.add_argument("--version", action="version", version=f"flowrelay {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs: dict[str, Verb] = {}
    for module in (serve, load, demo, report, ingest, record):
        verbs.update(module.register(sub))
    return parser, verbs


def main(argv: Sequence[str] | None = None) -> int:
    parser, verbs = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return EXIT_USAGE
    return verbs[args.verb](args)


if __name__ == "__main__":
    sys.exit(main())
