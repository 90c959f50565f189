"""Pass/fail thresholds on a run's summary figures, in k6's style.

A threshold is ``METRIC OP VALUE``, e.g. ``latency.p99<50ms``,
``errors.rate<0.1%``, ``rate.achieved_rps>=490``, ``requests.failed==0``,
``hops.upper.p50<5ms``. Operators: ``<  <=  >  >=  ==  !=``.

Metrics and where they are read in the summary (``Recorder.summary()``):

====================================  ===============================  ==========================
metric                                summary key                      unit of VALUE
====================================  ===============================  ==========================
``latency.STAT``                      ``latency_ms.STAT``              ms (``us``, ``ms``, ``s``)
``service_time.STAT``                 ``service_time_ms.STAT``         ms
``scheduler_lag.STAT``                ``scheduler_lag_ms.STAT``        ms
``hops.NAME.STAT``                    ``hops_ms.NAME.STAT``            ms
                                      (or ``hops.NAME.STAT``)
``errors.rate``                       ``errors.rate`` (or              fraction, or ``%``
                                      ``error_rate``), else computed
                                      as (sent - ok) / sent from
                                      ``requests``
``requests.COUNT``                    ``requests.COUNT``               a count
``rate.RATE``                         ``rate.RATE``                    requests per second
====================================  ===============================  ==========================

STAT is one of ``p50 p90 p99 p999 p9999 max mean`` (milliseconds; a bare
number means ms, a unit converts) or ``count``. COUNT is one of ``sent ok
failed timeout dropped unanswered transport_failed``; RATE one of
``achieved_rps target_rps sent_rps ok_rps``, read as the summary defines
them. NAME is a hop: ``gateway``,
``outside_gateway`` or an executor's name.

An unknown metric, operator or unit is a usage error raised by
:func:`parse_threshold` / :func:`validate`, before any traffic is sent. A
metric with no figure in the summary (no answers, no such hop) fails.

Imports: the standard library, relay.common.units, and loadtest.measure.accounting for the names of the request
counts (a module with no imports of its own beyond the standard library).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from loadtest.measure.accounting import REQUEST_COUNTS
from relay.common.units import parse_duration

__all__ = ["Threshold", "ThresholdError", "evaluate", "parse_threshold", "valid_metrics", "validate"]

Unit = Literal["ms", "count", "fraction", "rps"]

# The keys of LatencyHistogram.summary_ms(); repeated here so that checking a threshold's syntax does not load
# the histogram code and hdrh (a test keeps the two in step).
TIMING_STATS: tuple[str, ...] = ("p50", "p90", "p99", "p999", "p9999", "max", "mean")
COUNT_STAT = "count"
_TIMING_SECTIONS: dict[str, str] = {
    "latency": "latency_ms",
    "service_time": "service_time_ms",
    "scheduler_lag": "scheduler_lag_ms",
}
HOPS_SECTION = "hops_ms"
RATES: tuple[str, ...] = ("achieved_rps", "target_rps", "sent_rps", "ok_rps")

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_EXPR_RE = re.compile(r"\s*(?P<metric>[^\s<>=!]+)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>\S(?:.*\S)?)\s*")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class ThresholdError(ValueError):
    """A threshold that cannot be understood: a usage error, reported before the run."""


@dataclass(frozen=True, slots=True)
class Threshold:
    """A parsed threshold. ``value`` is in the unit of the summary key at ``path``."""

    expr: str
    metric: str
    path: tuple[str, ...]
    op: str
    value: float
    unit: Unit

    def holds(self, actual: float) -> bool:
        return _OPERATORS[self.op](actual, self.value)


def valid_metrics() -> list[str]:
    """Every metric a threshold may name (``NAME`` stands for a hop name)."""
    names: list[str] = []
    for section in (*_TIMING_SECTIONS, "hops.NAME"):
        names.extend(f"{section}.{stat}" for stat in (*TIMING_STATS, COUNT_STAT))
    names.append("errors.rate")
    names.extend(f"requests.{count}" for count in REQUEST_COUNTS)
    names.extend(f"rate.{rate}" for rate in RATES)
    return names


def _metrics_help() -> str:
    stats = ",".join((*TIMING_STATS, COUNT_STAT))
    return (
        f"latency.{{{stats}}}, service_time.{{...}}, scheduler_lag.{{...}}, hops.NAME.{{...}} (NAME: "
        f"gateway, outside_gateway or an executor), errors.rate, "
        f"requests.{{{','.join(REQUEST_COUNTS)}}}, rate.{{{','.join(RATES)}}}"
    )


def _resolve(metric: str, expr: str) -> tuple[tuple[str, ...], Unit]:
    """Map a metric name to its summary path and unit, or raise ThresholdError."""
    section, _, rest = metric.partition(".")
    if section in _TIMING_SECTIONS and rest in TIMING_STATS:
        return (_TIMING_SECTIONS[section], rest), "ms"
    if section in _TIMING_SECTIONS and rest == COUNT_STAT:
        return (_TIMING_SECTIONS[section], rest), "count"
    if section == "hops":
        name, _, stat = rest.rpartition(".")
        if name and stat in TIMING_STATS:
            return (HOPS_SECTION, name, stat), "ms"
        if name and stat == COUNT_STAT:
            return (HOPS_SECTION, name, stat), "count"
    if metric == "errors.rate":
        return ("errors", "rate"), "fraction"
    if section == "requests" and rest in REQUEST_COUNTS:
        return ("requests", rest), "count"
    if section == "rate" and rest in RATES:
        return ("rate", rest), "rps"
    raise ThresholdError(f"unknown metric {metric!r} in threshold {expr!r}; valid metrics: {_metrics_help()}")


def _parse_value(text: str, unit: Unit, expr: str) -> float:
    if _NUMBER_RE.fullmatch(text):
        value = float(text)
    elif unit == "ms":
        try:
            value = round(parse_duration(text) * 1000.0, 9)
        except ValueError:
            raise ThresholdError(
                f"bad value {text!r} in threshold {expr!r}: expected milliseconds, or a number with "
                f"unit us, ms or s (50ms, 0.5s, 250us)"
            ) from None
    elif unit == "fraction" and text.endswith("%") and _NUMBER_RE.fullmatch(text[:-1].strip()):
        value = float(text[:-1].strip()) / 100.0
    else:
        expected = {
            "fraction": "a fraction (0.001) or a percentage (0.1%)",
            "count": "a plain number (counts take no unit)",
            "rps": "a plain number of requests per second",
        }
        raise ThresholdError(f"bad value {text!r} in threshold {expr!r}: expected {expected[unit]}")
    if not math.isfinite(value):
        raise ThresholdError(f"bad value {text!r} in threshold {expr!r}: must be finite")
    return value


def parse_threshold(expr: str) -> Threshold:
    """Parse ``METRIC OP VALUE``; raises ThresholdError (a ValueError) on any mistake."""
    if not isinstance(expr, str):
        raise ThresholdError(f"a threshold is a string like 'latency.p99<50ms', got {expr!r}")
    match = _EXPR_RE.fullmatch(expr)
    if match is None:
        raise ThresholdError(
            f"cannot read threshold {expr!r}: expected METRIC OP VALUE, e.g. 'latency.p99<50ms', "
            f"with OP one of {' '.join(_OPERATORS)}"
        )
    metric, op, value_text = match.group("metric"), match.group("op"), match.group("value")
    path, unit = _resolve(metric, expr)
    value = _parse_value(value_text, unit, expr)
    return Threshold(expr=expr.strip(), metric=metric, path=path, op=op, value=value, unit=unit)


def validate(threshold: str | Threshold) -> Threshold:
    """Check a threshold before the run; returns it parsed. Raises ThresholdError."""
    if isinstance(threshold, Threshold):
        _resolve(threshold.metric, threshold.expr)
        if threshold.op not in _OPERATORS:
            raise ThresholdError(f"unknown operator {threshold.op!r} in threshold {threshold.expr!r}")
        return threshold
    return parse_threshold(threshold)


def _lookup(summary: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = summary
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _figure(summary: Mapping[str, Any], threshold: Threshold) -> float | None:
    path = threshold.path
    candidates = [path]
    # The same figures where a report's summary.json keeps them.
    if path[0] == HOPS_SECTION:
        candidates.append(("hops", *path[1:]))
    if path == ("errors", "rate"):
        candidates.append(("error_rate",))
    for candidate in candidates:
        value = _lookup(summary, candidate)
        if _is_number(value):
            return value
    if path == ("errors", "rate"):
        sent = _lookup(summary, ("requests", "sent"))
        ok = _lookup(summary, ("requests", "ok"))
        if _is_number(sent) and _is_number(ok) and sent > 0:
            return (sent - ok) / sent
    return None


def evaluate(thresholds: Iterable[str | Threshold], summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Check each threshold against ``summary``.

    Returns one ``{"expr", "ok", "value"}`` per threshold, in order; ``value`` is
    the summary's figure (None when absent, which fails the threshold, with a
    ``"note"`` saying why).
    """
    results: list[dict[str, Any]] = []
    for item in thresholds:
        threshold = validate(item)
        value = _figure(summary, threshold)
        if value is None:
            results.append(
                {
                    "expr": threshold.expr,
                    "ok": False,
                    "value": None,
                    "note": f"no figure for {threshold.metric} in this run",
                }
            )
        else:
            results.append({"expr": threshold.expr, "ok": threshold.holds(value), "value": value})
    return results
