"""The `flowrelay report` verb: a results folder (or two) -> one self-contained HTML page; or, with `--merge`,
runs started by hand -> one merged results folder (loadtest.outputs.merge) and its page.

Exit codes: 0 written; 1 the page could not be written; 2 a usage error (wrong number of folders, a folder
that is not a results folder, folders that cannot be merged).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from loadtest.outputs.merge import MergeError, merge_folders
from loadtest.outputs.report import COMPARISON_FILE, REPORT_FILE, ResultsError, write_comparison, write_report
from loadtest.outputs.summary import format_table

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def run(args: argparse.Namespace) -> int:
    dirs = [Path(d) for d in args.results]
    if args.merge:
        merged = _merge(dirs, args.out or dirs[0].parent / "merged")
        if merged is None:
            return EXIT_USAGE
        dirs = [merged]  # and its report, as for any results folder
    elif args.out:
        print("flowrelay report: --out is for --merge", file=sys.stderr)
        return EXIT_USAGE
    if len(dirs) > 2:
        print("flowrelay report: give one results folder (a report) or two (a comparison, B against A)",
              file=sys.stderr)
        return EXIT_USAGE
    html_path = Path(args.html) if args.html else (
        dirs[0] / REPORT_FILE if len(dirs) == 1 else dirs[1] / COMPARISON_FILE)
    try:
        written = write_report(dirs[0], html_path) if len(dirs) == 1 else write_comparison(dirs, html_path)
    except ResultsError as exc:
        print(f"flowrelay report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"flowrelay report: cannot write {html_path}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    size_mb = written.stat().st_size / 1e6
    what = "report" if len(dirs) == 1 else "comparison"
    print(f"{what}: {written} ({size_mb:.1f} MB, self-contained: open it in any browser, no network needed)")
    return EXIT_OK


def _merge(dirs: list[Path], out: Path) -> Path | None:
    """Merge `dirs` into `out`; None (and the reason on stderr) when they cannot be merged."""
    try:
        summary = merge_folders(dirs, out)
    except (MergeError, OSError) as exc:
        print(f"flowrelay report: {exc}", file=sys.stderr)
        return None
    print(format_table(summary))
    print(f"\n{len(dirs)} runs merged into {out}/")
    return out


def register(sub: Any) -> dict[str, Any]:
    """Add the `report` verb to the `flowrelay` command."""
    p = sub.add_parser(
        "report",
        help="turn a results folder into an HTML report, or compare two",
        description="Write a self-contained HTML report (charts inlined, no network needed) of a results "
        "folder written by `flowrelay load --out DIR`; given two folders A and B, a comparison of B "
        "against A. With --merge, runs started by hand (one per machine, say) become one results folder, "
        "merged exactly (histograms merged, never percentiles averaged), and its report.",
    )
    p.add_argument("results", nargs="+", type=Path, metavar="DIR",
                   help="a results folder; two folders A B for a comparison")
    p.add_argument("--html", type=Path, metavar="PATH",
                   help=f"where to write the page (default DIR/{REPORT_FILE}, or B/{COMPARISON_FILE} for two)")
    p.add_argument("--merge", action="store_true", help="merge the folders (two or more) into one results folder")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="with --merge: the merged results folder (default: `merged` beside the first folder)")
    return {"report": run}
