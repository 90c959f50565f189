"""A run's results folder read and checked, and the figures the report derives from it (no HTML, no charts).

`load_results` reads `summary.json` and `timeseries.jsonl` (written by `flowrelay load --out`, see
loadtest.outputs.summary and loadtest.outputs.timeseries) and raises `ResultsError` with a message that names the
file and what is wrong. The rest cuts the summary into what the page shows: the per-hop parts of a round trip,
the error counts by reason, the percentile distribution's points, the target rate's breakpoints.

Imports: the standard library, orjson and loadtest.outputs.timeseries (for the file's name) only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from loadtest.outputs.timeseries import TIMESERIES_FILE

# The name loadtest.outputs.summary writes (not imported from there: that module reads the engine's results).
SUMMARY_FILE = "summary.json"

# Keys summary.json must have, and the type each must be, for a report to make sense.
_REQUIRED: dict[str, type] = {
    "target": str,
    "requests": dict,
    "rate": dict,
    "latency_ms": dict,
    "service_time_ms": dict,
}
GATEWAY = "gateway"
OUTSIDE = "outside_gateway"
GATEWAY_OWN = "gateway (own)"
OUTSIDE_LABEL = "outside the gateway"


class ResultsError(ValueError):
    """A results folder that is missing, incomplete or malformed; the message says which and why."""


@dataclass(frozen=True)
class Results:
    """One run's results folder, read and checked."""

    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return self.path.resolve().name or str(self.path)


def load_results(results_dir: Path) -> Results:
    """Read `summary.json` and `timeseries.jsonl` from ``results_dir``; raises ResultsError when either is
    missing or malformed."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsError(f"{results_dir}: no such folder (write one with `flowrelay load ... --out {results_dir}`)")
    summary_path = results_dir / SUMMARY_FILE
    if not summary_path.is_file():
        raise ResultsError(
            f"{results_dir}: no {SUMMARY_FILE}, so not a results folder "
            f"(write one with `flowrelay load ... --out {results_dir}`)"
        )
    try:
        summary = orjson.loads(summary_path.read_bytes())
    except OSError as exc:
        raise ResultsError(f"{summary_path}: cannot read: {exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ResultsError(f"{summary_path}: not valid JSON ({exc})") from None
    if not isinstance(summary, dict):
        raise ResultsError(f"{summary_path}: expected a JSON object, found {type(summary).__name__}")
    for key, kind in _REQUIRED.items():
        if not isinstance(summary.get(key), kind):
            found = "missing" if key not in summary else f"a {type(summary[key]).__name__}"
            raise ResultsError(f"{summary_path}: '{key}' should be {_json_kind(kind)}, is {found}")
    for key in ("hops", "errors"):
        if not isinstance(summary.get(key, {}), dict):
            raise ResultsError(f"{summary_path}: '{key}' should be an object")
    thresholds = summary.get("thresholds", [])
    if not isinstance(thresholds, list) or not all(isinstance(t, dict) for t in thresholds):
        raise ResultsError(f"{summary_path}: 'thresholds' should be a list of objects")

    series_path = results_dir / TIMESERIES_FILE
    if not series_path.is_file():
        raise ResultsError(f"{results_dir}: no {TIMESERIES_FILE} beside {SUMMARY_FILE}")
    try:
        rows = _read_series(series_path)
    except OSError as exc:
        raise ResultsError(f"{series_path}: cannot read: {exc}") from None
    return Results(results_dir, summary, rows)


def _read_series(series_path: Path) -> list[dict[str, Any]]:
    """The rows of a timeseries.jsonl, read a line at a time (a soak's file can be long); raises
    ResultsError on a malformed line."""
    rows: list[dict[str, Any]] = []
    with series_path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ResultsError(f"{series_path}, line {number}: not valid JSON ({exc})") from None
            if not isinstance(row, dict) or not is_number(row.get("t")):
                raise ResultsError(f"{series_path}, line {number}: expected an object with a numeric 't'")
            for key in ("error_reasons", "hops"):
                if not isinstance(row.get(key, {}), dict):
                    raise ResultsError(f"{series_path}, line {number}: '{key}' should be an object")
            rows.append(row)
    return rows


def _json_kind(kind: type) -> str:
    return {str: "a string", dict: "an object", list: "a list"}.get(kind, kind.__name__)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def num(value: object) -> float | None:
    return float(value) if is_number(value) else None  # type: ignore[arg-type]


# ---- what the page derives from a summary -----------------------------------------------------------


def hop_label(name: str) -> str:
    """How a hop is named on the page."""
    return {GATEWAY: "gateway (all)", OUTSIDE: OUTSIDE_LABEL}.get(name, name)


def hops_of(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in (summary.get("hops") or {}).items() if isinstance(v, dict)}


def hop_parts(hops: dict[str, Any], stat: str) -> list[tuple[str, float]]:
    """The round trip cut into parts that do not overlap: each Executor's span, the gateway's own time
    (its span minus its Executors') and the time outside the gateway."""
    parts: list[tuple[str, float]] = []
    inside = 0.0
    for name in (n for n in hops if n not in (GATEWAY, OUTSIDE) and isinstance(hops[n], dict)):
        v = num(hops[name].get(stat))
        if v is not None:
            parts.append((name, v))
            inside += v
    gateway = num((hops.get(GATEWAY) or {}).get(stat))
    if gateway is not None:
        parts.append((GATEWAY_OWN, max(0.0, gateway - inside)))
    outside = num((hops.get(OUTSIDE) or {}).get(stat))
    if outside is not None:
        parts.append((OUTSIDE_LABEL, outside))
    return parts


def error_counts(summary: dict[str, Any]) -> list[tuple[str, int]]:
    """Every reason a request failed or was dropped, with its count, the most frequent first."""
    counts = [(str(k), int(v)) for k, v in (summary.get("errors") or {}).items() if is_number(v)]
    dropped = (summary.get("requests") or {}).get("dropped_by_reason") or {}
    counts += [(f"dropped: {k}", int(v)) for k, v in dropped.items() if is_number(v)]
    return sorted(counts, key=lambda kv: -kv[1])


def distribution_points(summary: dict[str, Any], key: str) -> tuple[list[list[float]], bool]:
    """``[[percentile, ms], ...]`` of a histogram: the full distribution when the results folder has it,
    else the summary's few percentiles (the flag says which)."""
    points = (summary.get("latency_distribution") or {}).get(key)
    if isinstance(points, list) and points:
        good = [[float(p[0]), float(p[1])] for p in points
                if isinstance(p, list | tuple) and len(p) == 2 and is_number(p[0]) and is_number(p[1])]
        if good:
            return good, True
    figures = summary.get(key) or {}
    coarse = [[p, float(figures[k])] for k, p in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9),
                                                   ("p9999", 99.99), ("max", 100.0)) if is_number(figures.get(k))]
    return coarse, False


def percentile_axis(points: Sequence[Sequence[float]]) -> list[list[float]]:
    """Points as ``[x, ms]`` with x = 1/(1-p) (so each 9 of a percentile takes the same width on a log axis).
    The 100% point has no finite x: the max is drawn as a last step at the last finite x."""
    out: list[list[float]] = []
    for p, ms in points:
        if p >= 100.0:
            if not out or ms > out[-1][1]:
                out.append([out[-1][0] if out else 1.0, ms])
            continue
        out.append([round(1.0 / (1.0 - p / 100.0), 6), ms])
    return out


def target_breakpoints(model: str | None, rate: float | None, stages: Sequence[Sequence[float]] | None
                       ) -> dict[str, Any] | None:
    """The target rate over the run as the page draws it: ``{"points": [[t, rate], ...], "after": rate or
    None}``, linear between points, ``after`` past the last (None: the last rate holds). Stages ramp from 0, as
    loadtest.models.schedule.Stages does; None for the closed model."""
    if model == "closed":
        return None
    if stages:
        t, points = 0.0, [[0.0, 0.0]]
        for duration_s, target in stages:
            t += float(duration_s)
            points.append([round(t, 6), float(target)])
        return {"points": points, "after": 0.0}
    if rate:
        return {"points": [[0.0, float(rate)]], "after": None}
    return None
