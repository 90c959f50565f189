"""loadtest.thresholds: k6-style pass/fail checks on a run's summary."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest import thresholds as thresholds_module
from loadtest.measure.histograms import SUMMARY_KEYS
from loadtest.measure.recorder import Recorder
from loadtest.thresholds import Threshold, ThresholdError, evaluate, parse_threshold, valid_metrics, validate


@pytest.mark.parametrize(
    ("expr", "path", "op", "value"),
    [
        ("latency.p99<50ms", ("latency_ms", "p99"), "<", 50.0),
        ("latency.p99<50", ("latency_ms", "p99"), "<", 50.0),
        ("latency.p99<0.5s", ("latency_ms", "p99"), "<", 500.0),
        ("latency.p50 <= 250us", ("latency_ms", "p50"), "<=", 0.25),
        ("latency.max<1m", ("latency_ms", "max"), "<", 60_000.0),
        ("service_time.mean>1ms", ("service_time_ms", "mean"), ">", 1.0),
        ("scheduler_lag.p999<5ms", ("scheduler_lag_ms", "p999"), "<", 5.0),
        ("latency.count>=1000", ("latency_ms", "count"), ">=", 1000.0),
        ("errors.rate<0.001", ("errors", "rate"), "<", 0.001),
        ("errors.rate<0.1%", ("errors", "rate"), "<", 0.001),
        ("rate.achieved_rps>=490", ("rate", "achieved_rps"), ">=", 490.0),
        ("requests.failed==0", ("requests", "failed"), "==", 0.0),
        ("requests.dropped != 0", ("requests", "dropped"), "!=", 0.0),
        ("hops.upper.p50<5ms", ("hops_ms", "upper", "p50"), "<", 5.0),
        ("hops.outside_gateway.p99<2ms", ("hops_ms", "outside_gateway", "p99"), "<", 2.0),
        ("hops.my.executor.p99<2ms", ("hops_ms", "my.executor", "p99"), "<", 2.0),
    ],
)
def test_parse_maps_metrics_to_summary_keys_and_units(expr: str, path: tuple, op: str, value: float) -> None:
    threshold = parse_threshold(expr)
    assert threshold.path == path
    assert threshold.op == op
    assert threshold.value == pytest.approx(value)
    assert threshold.expr == expr.strip()


@pytest.mark.parametrize(
    "expr", ["latency.p95<50ms", "latency.median<5", "hops.upper.p95<1ms", "throughput>5", "errors.count<1"]
)
def test_unknown_metric_is_a_usage_error_listing_valid_names(expr: str) -> None:
    with pytest.raises(ThresholdError) as excinfo:
        validate(expr)
    message = str(excinfo.value)
    assert "unknown metric" in message
    for name in ("latency.{p50", "p99", "errors.rate", "requests.{sent", "rate.{achieved_rps", "hops.NAME"):
        assert name in message


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("requests.failed==0ms", "counts take no unit"),
        ("errors.rate<5ms", "percentage"),
        ("latency.p99<50xs", "unit us, ms or s"),
        ("latency.p99=50ms", "METRIC OP VALUE"),
        ("latency.p99 50ms", "METRIC OP VALUE"),
        ("latency.p99<", "METRIC OP VALUE"),
        ("<50ms", "METRIC OP VALUE"),
        ("rate.achieved_rps>=inf", "plain number"),
        ("latency.p99<1e400", "finite"),
    ],
)
def test_malformed_thresholds_are_usage_errors(expr: str, fragment: str) -> None:
    with pytest.raises(ThresholdError, match=fragment):
        parse_threshold(expr)


def test_threshold_errors_are_value_errors_and_non_strings_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_threshold(42)  # type: ignore[arg-type]


def test_validate_passes_good_thresholds_through() -> None:
    parsed = validate("latency.p99<50ms")
    assert isinstance(parsed, Threshold)
    assert validate(parsed) is parsed


def test_valid_metrics_cover_every_summary_statistic() -> None:
    names = valid_metrics()
    assert {f"latency.{key}" for key in SUMMARY_KEYS} <= set(names)
    assert {f"hops.NAME.{key}" for key in SUMMARY_KEYS} <= set(names)
    assert (*thresholds_module.TIMING_STATS, thresholds_module.COUNT_STAT) == SUMMARY_KEYS


SUMMARY: dict[str, Any] = {
    "requests": {
        "sent": 1000,
        "ok": 999,
        "failed": 1,
        "timeout": 0,
        "dropped": 0,
        "unanswered": 0,
        "transport_failed": 0,
    },
    "rate": {"target_rps": 500.0, "achieved_rps": 499.5, "sent_rps": 500.0, "measured_duration_s": 2.0},
    "latency_ms": {"p50": 12.0, "p99": 50.0, "max": 80.0, "count": 999},
    "hops_ms": {"upper": {"p50": 4.2}},
}


def test_evaluate_reports_each_threshold_with_its_figure() -> None:
    results = evaluate(
        [
            "latency.p99<50ms",
            "latency.p99<=50ms",
            "latency.p50<0.02s",
            "errors.rate<0.001",
            "errors.rate<=0.1%",
            "rate.achieved_rps>=490",
            "requests.failed==0",
            "hops.upper.p50<5ms",
        ],
        SUMMARY,
    )
    assert [(r["expr"], r["ok"]) for r in results] == [
        ("latency.p99<50ms", False),  # 50 is not below 50
        ("latency.p99<=50ms", True),
        ("latency.p50<0.02s", True),
        ("errors.rate<0.001", False),  # computed: (1000 - 999) / 1000
        ("errors.rate<=0.1%", True),
        ("rate.achieved_rps>=490", True),
        ("requests.failed==0", False),
        ("hops.upper.p50<5ms", True),
    ]
    assert results[0]["value"] == 50.0
    assert results[3]["value"] == pytest.approx(0.001)


def test_a_figure_missing_from_the_run_fails_its_threshold() -> None:
    [result] = evaluate(["hops.lower.p50<5ms"], SUMMARY)
    assert result["ok"] is False and result["value"] is None
    assert "hops.lower.p50" in result["note"]
    [no_traffic] = evaluate(["errors.rate<0.01"], {"requests": {"sent": 0, "ok": 0}})
    assert no_traffic["ok"] is False


def test_report_layout_with_hops_and_error_rate_at_the_top_is_read_too() -> None:
    report = {"requests": {"sent": 10, "ok": 10}, "error_rate": 0.25, "hops": {"upper": {"p99": 3.0}}}
    results = evaluate(["hops.upper.p99<5ms", "errors.rate<0.1"], report)
    assert [(r["ok"], r["value"]) for r in results] == [(True, 3.0), (False, 0.25)]


def test_evaluate_refuses_unknown_metrics_too() -> None:
    with pytest.raises(ThresholdError):
        evaluate(["latency.p95<1ms"], SUMMARY)


def test_thresholds_read_a_real_recorder_summary() -> None:
    recorder = Recorder()
    for n in range(100):
        due = n / 100
        recorder.on_sent(due, due)
        recorder.on_answer(due, due, due + 0.004)
    recorder.finish([])
    summary = recorder.summary(measured_duration_s=1.0, target_rps=100.0)
    results = evaluate(
        [
            "latency.p99<5ms",
            "errors.rate==0",
            "rate.achieved_rps>=99",
            "requests.ok==100",
            "latency.count==100",
        ],
        summary,
    )
    assert all(r["ok"] for r in results), results


def test_every_request_count_of_a_summary_can_be_a_threshold() -> None:
    from loadtest.measure.accounting import Accounting

    counts = Accounting().to_dict()
    names = [name for name in counts if name not in ("errors", "warmup")]
    assert names, "the summary's request counts"
    summary = {"requests": counts}
    checks = [parse_threshold(f"requests.{name}==0") for name in names]
    assert all(result["ok"] for result in evaluate(checks, summary))
    assert {f"requests.{name}" for name in names} <= set(valid_metrics())
