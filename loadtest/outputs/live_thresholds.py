"""Each threshold's state while a run goes: holding, failing now, or no figure yet; judged as each second closes.

The verdict that sets the exit code is `loadtest.thresholds.evaluate` on the whole run's summary, at the end. While
the run goes there is no summary, only the per-second rows, so a threshold is judged on the figure the last row
has for it: latency, service time, scheduler lag and per-hop percentiles of that second; its error rate (errors
over what was answered or failed in it); its rates. Counts (`requests.failed==0`) are the run's so far, summed
over the rows of the measured window. A figure the rows do not carry (p99.99, mean, counts of histograms) waits
for the end. Rows of the warm-up are not judged. The comparison itself is `Threshold.holds`, the one the final
verdict uses.

Imports: the standard library and loadtest.thresholds only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from loadtest.thresholds import Threshold, evaluate, parse_threshold

HOLDING, FAILING, WAITING, WARMUP = "holding", "failing", "waiting", "warm-up"
_SECOND = "the last second"
_SO_FAR = "the run so far"
_AT_END = "the final summary"
# The summary's request counts, from the rows' keys (a row counts transport failures and timeouts in `errors`).
_COUNTS = {"sent": "sent", "ok": "ok", "dropped": "dropped"}


def _scope(threshold: Threshold) -> str:
    section = threshold.path[0]
    if section == "requests":
        return _SO_FAR if threshold.path[1] in _COUNTS else _AT_END
    if threshold.unit == "count":
        return _AT_END
    return _SECOND


class LiveThresholds:
    """Judges each threshold on each row; `states()` is what the live page shows."""

    def __init__(self, exprs: Sequence[str], target_at: Callable[[float], float | None] | None = None) -> None:
        self.thresholds = [parse_threshold(e) for e in exprs]
        self._target_at = target_at
        self._totals = dict.fromkeys(_COUNTS.values(), 0)
        self._seconds = 0
        self._failing = [0] * len(self.thresholds)
        self._last: list[dict[str, Any]] = [
            {"expr": t.expr, "state": WAITING, "value": None, "scope": _scope(t)} for t in self.thresholds
        ]
        self._warmup = False

    def on_row(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Judge the thresholds on a second that just closed; returns the new states."""
        if row.get("warmup"):
            self._warmup = True
            for state in self._last:
                state.update(state=WARMUP, value=None)
            return self.states()
        self._warmup = False
        for key in _COUNTS.values():
            self._totals[key] += int(row.get(key) or 0)
        self._seconds += 1
        figures = self._figures(row)
        for i, (threshold, verdict) in enumerate(zip(self.thresholds, evaluate(self.thresholds, figures),
                                                     strict=True)):
            scope = _scope(threshold)
            if scope == _AT_END or verdict["value"] is None:
                self._last[i].update(state=WAITING, value=None)
                continue
            failing = not verdict["ok"]
            self._failing[i] += failing
            self._last[i].update(state=FAILING if failing else HOLDING, value=verdict["value"])
        return self.states()

    def states(self) -> list[dict[str, Any]]:
        return [{**state, "failing_seconds": failing, "seconds": self._seconds}
                for state, failing in zip(self._last, self._failing, strict=True)]

    def _figures(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The last second's figures in the summary's shape, for `evaluate`."""
        settled = (row.get("ok") or 0) + (row.get("errors") or 0)
        target = None
        if self._target_at is not None:
            interval = row.get("interval_s") or 0.0
            target = self._target_at(float(row["t"]) - interval / 2)
        hops = row.get("hops") or {}
        return {
            "latency_ms": {"p50": row.get("p50_ms"), "p90": row.get("p90_ms"), "p99": row.get("p99_ms"),
                           "p999": row.get("p999_ms"), "max": row.get("max_ms")},
            "service_time_ms": {"p50": row.get("service_p50_ms"), "p99": row.get("service_p99_ms")},
            "scheduler_lag_ms": {"p99": row.get("lag_p99_ms"), "max": row.get("lag_max_ms")},
            "hops_ms": {name: {"p50": h.get("p50_ms"), "p99": h.get("p99_ms"), "mean": h.get("mean_ms")}
                        for name, h in hops.items() if isinstance(h, Mapping)},
            "errors": {"rate": (row.get("errors") or 0) / settled if settled else None},
            "requests": dict(self._totals),
            "rate": {"achieved_rps": row.get("sent_rps"), "sent_rps": row.get("sent_rps"),
                     "ok_rps": row.get("ok_rps"), "target_rps": target},
        }
