"""loadtest.measure: histograms, hop spans, accounting, time series, and the recorder."""

from __future__ import annotations

import gc
import itertools
import math
from dataclasses import dataclass

import msgpack
import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.measure.accounting import MAX_REASONS, OTHER, Accounting, Ledger
from loadtest.measure.histograms import SUMMARY_KEYS, LatencyHistogram, us_to_ms
from loadtest.measure.hops import MAX_HOPS, hop_spans
from loadtest.measure.recorder import Recorder
from loadtest.measure.series import Interval, IntervalStats
from relay.wire.messages import route_spans


@dataclass
class Route:
    executor: object
    start_ns: object = None
    end_ns: object = None


S = 1_000_000_000  # ns per second
EPOCH_NS = 1_700_000_000 * S

durations = st.floats(min_value=0.0, max_value=70.0, allow_nan=False)


def _filled(values: list[float]) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    return histogram


# -- LatencyHistogram --


def test_summary_has_the_documented_keys_in_milliseconds() -> None:
    histogram = _filled([i / 1_000_000 for i in range(1, 10_001)])  # 1 µs .. 10 ms
    summary = histogram.summary_ms()
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["count"] == 10_000
    assert summary["p50"] == pytest.approx(5.0, rel=1e-3)
    assert summary["p90"] == pytest.approx(9.0, rel=1e-3)
    assert summary["p99"] == pytest.approx(9.9, rel=1e-3)
    assert summary["max"] == 10.0
    assert summary["mean"] == pytest.approx(5.0005, abs=1e-3)
    assert all(isinstance(summary[key], float) for key in SUMMARY_KEYS if key != "count")
    assert summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["p999"] <= summary["p9999"]
    assert summary["p9999"] <= summary["max"]


def test_values_are_rounded_to_three_decimals_of_a_millisecond() -> None:
    summary = _filled([0.0123456]).summary_ms()
    assert summary["max"] == 12.346
    assert summary["mean"] == 12.346
    assert summary["p50"] == 12.346  # never above the exact max


def test_empty_histogram_has_no_figures() -> None:
    summary = LatencyHistogram().summary_ms()
    assert summary["count"] == 0
    assert all(summary[key] is None for key in SUMMARY_KEYS if key != "count")
    assert LatencyHistogram().percentile_distribution() == []


def test_out_of_range_values_are_clamped_and_counted_not_dropped() -> None:
    histogram = _filled([0.010, 75.0, math.inf, -0.000_002])
    assert histogram.count == 4
    assert histogram.over_range == 2
    assert histogram.under_range == 1
    summary = histogram.summary_ms()
    assert summary["max"] == 60_000.0
    assert summary["p50"] == pytest.approx(10.0, rel=1e-3)  # 3 significant digits


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        LatencyHistogram().record(math.nan)


@settings(max_examples=50, deadline=None)
@given(st.lists(durations, max_size=300))
def test_record_fills_the_same_buckets_as_hdrh(values: list[float]) -> None:
    ours = _filled(values)
    reference = HdrHistogram(1, 60_000_000, 3)
    for value in values:
        reference.record_value(min(int(value * 1_000_000 + 0.5), 60_000_000))
    assert bytes(ours._hdr().counts) == bytes(reference.counts)
    assert ours._hdr().get_max_value() == reference.get_max_value()
    assert ours._hdr().total_count == reference.total_count == ours.count
    assert ours.histoblob() == reference.encode()


@settings(max_examples=80, deadline=None)
@given(st.lists(durations, min_size=1, max_size=300),
       st.lists(st.floats(0.0, 100.0), min_size=1, max_size=12))
def test_percentiles_are_the_values_hdrh_gives(values: list[float], percentiles: list[float]) -> None:
    ours = _filled(values)
    expected = ours._hdr().get_percentile_to_value_dict([*percentiles, 0.0, 50.0, 99.0, 100.0])
    found = ours.percentiles_ms([*percentiles, 0.0, 50.0, 99.0, 100.0])
    max_us = max(min(int(v * 1_000_000 + 0.5), 60_000_000) for v in values)
    assert found == {p: us_to_ms(min(v, max_us)) for p, v in expected.items()}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(durations, max_size=60), min_size=1, max_size=5))
def test_merged_histograms_equal_one_histogram_fed_all_values(parts: list[list[float]]) -> None:
    whole = _filled([value for part in parts for value in part])
    merged = LatencyHistogram()
    shipped = LatencyHistogram()
    for part in parts:
        piece = _filled(part)
        merged.merge(piece)
        shipped.merge(LatencyHistogram.decode(piece.encode()))
    assert merged == whole
    assert shipped == whole
    assert merged.summary_ms() == whole.summary_ms()
    assert merged.percentile_distribution() == whole.percentile_distribution()


def test_encode_decode_round_trip_keeps_everything() -> None:
    histogram = _filled([0.001, 0.002, 0.5, 61.0, -1.0])
    blob = histogram.encode()
    assert isinstance(blob, bytes)
    restored = LatencyHistogram.decode(blob)
    assert restored == histogram
    assert restored.over_range == 1 and restored.under_range == 1
    assert restored.summary_ms() == histogram.summary_ms()
    assert LatencyHistogram.decode(LatencyHistogram().encode()).count == 0


@pytest.mark.parametrize("blob", [b"", b"not a histogram", msgpack.packb({"v": 99}), msgpack.packb([1, 2])])
def test_decode_rejects_garbage_with_value_error(blob: bytes) -> None:
    with pytest.raises(ValueError):
        LatencyHistogram.decode(blob)


def test_histoblob_is_a_standard_hdrhistogram_encoding() -> None:
    histogram = _filled([0.001, 0.003, 0.007])
    decoded = HdrHistogram.decode(histogram.histoblob())
    assert decoded.get_total_count() == 3


def test_percentile_distribution_runs_from_0_to_100_percent() -> None:
    histogram = _filled([i / 10_000 for i in range(1, 1001)])  # 0.1 ms .. 100 ms
    points = histogram.percentile_distribution()
    assert points[0][0] == 0.0
    assert points[-1] == (100.0, 100.0)
    assert all(p1 <= p2 and v1 <= v2 for (p1, v1), (p2, v2) in itertools.pairwise(points))
    assert len(points) > 20  # enough points to draw the tail


# -- hop_spans --


def test_hop_spans_from_routes() -> None:
    routes = [
        Route("gateway", EPOCH_NS, EPOCH_NS + 4_000_000),
        Route("upper", EPOCH_NS + 1_000_000, EPOCH_NS + 2_000_000),
        Route("sleeper", EPOCH_NS + 2_000_000, EPOCH_NS + 3_500_000),
    ]
    spans = hop_spans(route_spans(routes), round_trip_s=0.010)
    assert spans == pytest.approx(
        {"gateway": 0.004, "upper": 0.001, "sleeper": 0.0015, "outside_gateway": 0.006}
    )


def test_hop_spans_do_not_depend_on_the_servers_clock_offset() -> None:
    def routes(offset_ns: int) -> list[Route]:
        return [
            Route("gateway", EPOCH_NS + offset_ns, EPOCH_NS + offset_ns + 3_000_000),
            Route("upper", EPOCH_NS + offset_ns + 1_000_000, EPOCH_NS + offset_ns + 2_000_000),
        ]

    assert hop_spans(route_spans(routes(0)), 0.005) == hop_spans(route_spans(routes(3600 * S)), 0.005)
    assert hop_spans(route_spans(routes(-3600 * S)), 0.005) == pytest.approx(hop_spans(route_spans(routes(0)), 0.005))


def test_an_executor_visited_twice_gets_the_sum_of_its_spans() -> None:
    routes = [
        Route("gateway", 0, 10_000_000),
        Route("upper", 1_000_000, 2_000_000),
        Route("upper", 5_000_000, 8_000_000),
    ]
    assert hop_spans(route_spans(routes), 0.02)["upper"] == pytest.approx(0.004)


def test_entries_without_both_stamps_or_with_negative_spans_are_skipped() -> None:
    routes = [
        Route("gateway", 0, None),  # a gateway that has not stamped its end yet
        Route("upper", 1_000_000, 2_000_000),
        Route("sleeper", None, 2_000_000),
        Route("backwards", 5_000_000, 1_000_000),
    ]
    assert hop_spans(route_spans(routes), 0.01) == pytest.approx({"upper": 0.001})


def test_outside_gateway_needs_a_gateway_and_a_sane_round_trip() -> None:
    assert "outside_gateway" not in hop_spans([("upper", 1_000)], 0.01)
    assert "outside_gateway" not in hop_spans([("gateway", 50_000_000)], 0.01)  # would be < 0
    assert "outside_gateway" not in hop_spans([("gateway", 1_000_000)], math.nan)


odd_values = st.one_of(
    st.none(),
    st.integers(-(10**20), 10**20),
    st.floats(),
    st.text(max_size=5),
    st.booleans(),
    st.binary(max_size=3),
)


@given(
    routes=st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=3),
        st.lists(
            st.one_of(
                st.builds(Route, odd_values, odd_values, odd_values),
                st.builds(Route, st.sampled_from(["gateway", "upper"]), odd_values, odd_values),
                odd_values,
            ),
            max_size=6,
        ),
    ),
    round_trip=st.one_of(st.floats(), st.none(), st.text(max_size=2)),
)
def test_hop_spans_never_raise_and_never_return_negative_spans(routes: object, round_trip: object) -> None:
    pairs = route_spans(routes)  # type: ignore[arg-type]
    assert all(isinstance(name, str) and name and span >= 0 for name, span in pairs)
    for given_pairs in (pairs, routes):  # the pairs, and anything else handed in their place
        spans = hop_spans(given_pairs, round_trip)  # type: ignore[arg-type]
        assert all(isinstance(name, str) and name for name in spans)
        assert all(span >= 0 for span in spans.values())


# -- Accounting --

event_kinds = st.sampled_from(["send", "drop", "ok", "failed", "transport", "timeout"])
events = st.lists(
    st.tuples(
        event_kinds,
        st.integers(0, 1000),
        st.booleans(),
        st.sampled_from(["ValueError", "KeyError", "close 1006", "close 1011: boom"]),
    ),
    max_size=120,
)


def _play(accounting: Accounting, script: list[tuple[str, int, bool, str]]) -> None:
    """Drive a ledger the way the engine does, ending requests only once each."""
    in_flight: list[bool] = []  # the warm-up flag of each request still out
    for kind, pick, warmup, reason in script:
        ledger = accounting.ledger(warmup)
        if kind == "send":
            ledger.sent += 1
            in_flight.append(warmup)
        elif kind == "drop":
            ledger.dropped += 1
        elif in_flight:
            ledger = accounting.ledger(in_flight.pop(pick % len(in_flight)))
            if kind == "ok":
                ledger.ok += 1
            elif kind == "failed":
                ledger.add_failed(reason)
            elif kind == "transport":
                ledger.add_transport(reason)
            else:
                ledger.timeout += 1
    for warmup in in_flight:
        accounting.ledger(warmup).unanswered += 1


@given(events, events)
def test_accounting_always_adds_up(first: list, second: list) -> None:
    a, b = Accounting(), Accounting()
    _play(a, first)
    _play(b, second)
    for accounting in (a, b):
        accounting.check()
        figures = accounting.to_dict()
        assert figures["sent"] == sum(
            figures[key] for key in ("ok", "failed", "transport_failed", "timeout", "unanswered")
        )
        assert (
            sum(figures["errors"].values())
            == figures["failed"] + figures["transport_failed"] + figures["timeout"]
        )

    total = a.to_dict()
    other = b.to_dict()
    a.merge(b)
    a.check()
    merged = a.to_dict()
    for key in ("sent", "ok", "failed", "timeout", "dropped", "unanswered", "transport_failed"):
        assert merged[key] == total[key] + other[key]
        assert merged["warmup"][key] == total["warmup"][key] + other["warmup"][key]


def test_accounting_shape_and_error_reasons() -> None:
    accounting = Accounting()
    accounting.sent = 6
    accounting.ok = 2
    accounting.add_failed("ValueError")
    accounting.add_transport("close 1006")
    accounting.add_transport("close 1006")
    accounting.timeout = 1
    accounting.dropped = 3
    accounting.warmup.sent = 1
    accounting.warmup.ok = 1
    accounting.check()
    figures = accounting.to_dict()
    assert {key: figures[key] for key in figures if key not in ("errors", "warmup")} == {
        "sent": 6,
        "ok": 2,
        "failed": 1,
        "timeout": 1,
        "dropped": 3,
        "unanswered": 0,
        "transport_failed": 2,
    }
    assert figures["errors"] == {"executor: ValueError": 1, "close 1006": 2, "timeout": 1}
    assert figures["warmup"]["sent"] == 1 and figures["warmup"]["ok"] == 1


def test_check_says_what_does_not_add_up() -> None:
    accounting = Accounting()
    accounting.sent = 3
    accounting.ok = 1
    with pytest.raises(ValueError, match="do not add up: sent=3"):
        accounting.check()
    accounting.unanswered = 2
    accounting.check()
    accounting.warmup.ok = 1
    with pytest.raises(ValueError, match="warm-up"):
        accounting.check()


def test_distinct_reasons_are_capped() -> None:
    ledger = Ledger()
    for n in range(MAX_REASONS + 50):
        ledger.sent += 1
        ledger.add_transport(f"close 1011: request {n}")
    ledger.check()
    assert len(ledger.transport_by_reason) == MAX_REASONS + 1
    assert ledger.transport_by_reason[OTHER] == 50


def test_accounting_plain_form_round_trips_through_msgpack() -> None:
    accounting = Accounting()
    _play(accounting, [("send", 0, False, ""), ("send", 0, True, ""), ("failed", 0, False, "KeyError")])
    restored = Accounting.from_plain(msgpack.unpackb(msgpack.packb(accounting.to_plain())))
    assert restored == accounting


# -- IntervalStats --


def test_rows_count_one_interval_each_with_fresh_histograms() -> None:
    stats = IntervalStats()
    for _ in range(10):
        stats.on_sent(0.1)
    for _ in range(8):
        stats.on_answer(0.5, latency_s=0.100, service_s=0.090, ok=True)
    stats.on_answer(0.6, latency_s=0.001, service_s=0.001, ok=False)
    first = stats.roll(1.0)
    assert first["t"] == 1.0 and first["interval_s"] == 1.0
    assert (first["sent"], first["answered"], first["ok"], first["errors"], first["inflight"]) == (
        10,
        9,
        8,
        1,
        1,
    )
    assert first["p50_ms"] == 100.0 and first["p99_ms"] == 100.0
    assert first["service_p50_ms"] == 90.0
    assert first["sent_rps"] == 10.0

    stats.on_sent(1.2)
    stats.on_answer(1.5, latency_s=0.002, service_s=0.002, ok=True)
    stats.on_error(1.7, "close 1006")
    stats.on_dropped(1.8)
    second = stats.roll(2.0)
    assert second["p99_ms"] == 2.0  # nothing left over from the first second
    assert (second["sent"], second["errors"], second["dropped"], second["inflight"]) == (1, 1, 1, 0)
    assert second["error_reasons"] == {"close 1006": 1}

    quiet = stats.roll(3.0)
    assert quiet["sent"] == 0 and quiet["p50_ms"] is None and quiet["max_ms"] is None


def test_rows_flag_warmup_intervals() -> None:
    stats = IntervalStats(warmup_s=2.0)
    assert [stats.roll(t)["warmup"] for t in (1.0, 2.0, 3.0)] == [True, True, False]


def test_intervals_from_two_processes_merge_into_one_row() -> None:
    a, b, both = IntervalStats(), IntervalStats(), IntervalStats()
    for stats, latency in ((a, 0.010), (b, 0.030)):
        for target in (stats, both):
            target.on_sent(0.1)
            target.on_answer(0.2, latency, latency, True)
    left = a.close(1.0)
    right = Interval.from_plain(msgpack.unpackb(msgpack.packb(b.close(1.0).to_plain())))
    left.merge(right)
    assert left.to_row() == both.roll(1.0)


# -- Recorder --


def test_latency_is_measured_from_the_due_time_not_the_send() -> None:
    recorder = Recorder()
    recorder.on_sent(due_s=1.0, sent_s=1.5)  # the sender was 500 ms late
    recorder.on_answer(due_s=1.0, sent_s=1.5, answered_s=1.6)
    recorder.finish([])
    summary = recorder.summary(measured_duration_s=10)
    assert summary["latency_ms"]["max"] == 600.0
    assert summary["service_time_ms"]["max"] == 100.0
    assert summary["scheduler_lag_ms"]["max"] == 500.0


def test_warmup_requests_are_accounted_but_kept_out_of_figures() -> None:
    recorder = Recorder(warmup_s=5.0)
    recorder.on_sent(1.0, 1.0)
    recorder.on_answer(1.0, 1.0, 1.9)
    recorder.on_sent(6.0, 6.0)
    recorder.on_answer(6.0, 6.0, 6.01)
    recorder.on_dropped(2.0, 2.0)
    recorder.finish([])
    recorder.accounting.check()
    summary = recorder.summary(measured_duration_s=5.0)
    assert summary["requests"]["sent"] == 1 and summary["requests"]["dropped"] == 0
    assert summary["warmup"]["requests"]["sent"] == 1
    assert summary["warmup"]["requests"]["dropped"] == 1
    assert summary["latency_ms"]["count"] == 1 and summary["latency_ms"]["max"] == 10.0


def test_failures_are_counted_not_timed() -> None:
    recorder = Recorder()
    for due in (0.0, 0.1, 0.2, 0.3, 0.4):
        recorder.on_sent(due, due)
    recorder.on_answer(0.0, 0.0, 0.01)
    recorder.on_answer(0.1, 0.1, 0.101, error="ValueError")
    recorder.on_transport_error(0.2, 0.25, "close 1006")
    recorder.on_timeout(0.3, 5.3)
    recorder.finish([0.4])
    recorder.accounting.check()
    summary = recorder.summary(measured_duration_s=1.0, target_rps=5.0)
    assert summary["requests"] == {
        "sent": 5,
        "ok": 1,
        "failed": 1,
        "timeout": 1,
        "dropped": 0,
        "unanswered": 1,
        "transport_failed": 1,
    }
    assert summary["errors"]["rate"] == pytest.approx(0.8)
    assert summary["errors"]["by_reason"] == {"executor: ValueError": 1, "close 1006": 1, "timeout": 1}
    assert summary["rate"] == {
        "target_rps": 5.0,
        "achieved_rps": 1.0,
        "ok_rps": 1.0,
        "sent_rps": 5.0,
        "measured_duration_s": 1.0,
    }
    assert summary["latency_ms"]["count"] == 1


def test_hops_get_one_histogram_each() -> None:
    recorder = Recorder()
    routes = [
        Route("gateway", EPOCH_NS, EPOCH_NS + 8_000_000),
        Route("upper", EPOCH_NS, EPOCH_NS + 3_000_000),
    ]
    recorder.on_sent(0.0, 0.0)
    recorder.on_answer(0.0, 0.0, 0.010, hops=hop_spans(route_spans(routes), 0.010))
    hops = recorder.summary()["hops_ms"]
    assert set(hops) == {"gateway", "upper", "outside_gateway"}
    assert hops["gateway"]["p50"] == 8.0
    assert hops["upper"]["p50"] == 3.0
    assert hops["outside_gateway"]["p50"] == 2.0


def test_hop_names_are_capped() -> None:
    recorder = Recorder()
    for n in range(MAX_HOPS + 10):
        recorder.on_sent(0.0, 0.0)
        recorder.on_answer(0.0, 0.0, 0.01, hops={f"executor{n}": 0.001})
    assert len(recorder.hops) == MAX_HOPS + 1
    assert recorder.hops[OTHER].count == 10


def _feed(recorder: Recorder, script: list[tuple[str, float, float, bool]]) -> None:
    in_flight: list[tuple[float, float]] = []
    routes = [Route("gateway", 0, 2_000_000), Route("upper", 0, 1_000_000)]
    for kind, due_s, delay_s, flag in script:
        if kind == "send":
            sent_s = due_s + delay_s / 10
            recorder.on_sent(due_s, sent_s)
            in_flight.append((due_s, sent_s))
        elif kind == "drop":
            recorder.on_dropped(due_s, due_s)
        elif in_flight:
            due, sent = in_flight.pop(0)
            if kind == "ok":
                recorder.on_answer(due, sent, sent + delay_s,
                                   hops=hop_spans(route_spans(routes), delay_s) if flag else None)
            elif kind == "failed":
                recorder.on_answer(due, sent, sent + delay_s, error="RuntimeError")
            elif kind == "transport":
                recorder.on_transport_error(due, sent + delay_s, "close 1006")
            else:
                recorder.on_timeout(due, sent + delay_s)
    recorder.finish(due for due, _ in in_flight)


recorder_events = st.lists(
    st.tuples(
        event_kinds,
        st.floats(0.0, 20.0, allow_nan=False),
        st.floats(0.0, 2.0, allow_nan=False),
        st.booleans(),
    ),
    max_size=80,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(recorder_events, min_size=1, max_size=4))
def test_recorders_merge_exactly_and_survive_snapshots(parts: list[list]) -> None:
    whole = Recorder(warmup_s=5.0)
    merged = Recorder(warmup_s=5.0)
    for part in parts:
        _feed(whole, part)
        piece = Recorder(warmup_s=5.0)
        _feed(piece, part)
        piece.accounting.check()
        wire = msgpack.packb(piece.snapshot())
        merged.merge(Recorder.from_snapshot(msgpack.unpackb(wire)))
    whole.accounting.check()
    merged.accounting.check()
    assert merged.summary(10.0) == whole.summary(10.0)
    assert merged.latency == whole.latency
    assert merged.hops == whole.hops
    assert whole.latency.count == whole.accounting.ok


def test_merging_recorders_with_different_warmups_is_refused() -> None:
    with pytest.raises(ValueError, match="warm-up"):
        Recorder(warmup_s=1.0).merge(Recorder(warmup_s=2.0))


def test_snapshot_of_an_unknown_version_is_refused() -> None:
    snapshot = Recorder().snapshot()
    snapshot["v"] = 999
    with pytest.raises(ValueError, match="version"):
        Recorder.from_snapshot(snapshot)


def test_summary_without_traffic_has_no_rates_or_latencies() -> None:
    summary = Recorder().summary()
    assert summary["errors"]["rate"] is None
    assert summary["rate"]["achieved_rps"] is None
    assert summary["latency_ms"]["p99"] is None
    assert summary["hops_ms"] == {}


# -- each answer recorded once; memory freed without the garbage collector --


answer_events = st.lists(
    st.tuples(
        st.floats(0.0, 10.0, allow_nan=False),  # due time; warm-up ends at 5 s
        st.floats(0.0, 0.5, allow_nan=False),  # scheduler lag
        st.floats(0.0, 3.0, allow_nan=False),  # service time
        st.sampled_from(["answer", "answer", "roll", "read", "new series"]),
    ),
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(answer_events)
def test_totals_and_time_series_each_hold_every_answer_once(events: list) -> None:
    recorder = Recorder(warmup_s=5.0)
    measured_latency: list[float] = []
    measured_service: list[float] = []
    all_latency: list[float] = []
    closed: list[Interval] = []
    now = 0.0
    for due_s, lag_s, service_s, kind in events:
        if kind == "roll":
            closed.append(recorder.intervals.close(now))
        elif kind == "read":
            assert recorder.latency.count == len(measured_latency)  # reading mid-interval is exact too
        elif kind == "new series":
            # What the engine does at the start of a run: the link to the totals must survive it.
            closed.append(recorder.intervals.close(now))
            recorder.intervals = IntervalStats(now, 5.0)
        else:
            sent_s = due_s + lag_s
            answered_s = sent_s + service_s
            now = max(now, answered_s)
            recorder.on_sent(due_s, sent_s)
            recorder.on_answer(due_s, sent_s, answered_s)
            all_latency.append(answered_s - due_s)
            if due_s >= 5.0:
                measured_latency.append(answered_s - due_s)
                measured_service.append(answered_s - sent_s)
    closed.append(recorder.intervals.close(now))
    assert recorder.latency == _filled(measured_latency)
    assert recorder.service_time == _filled(measured_service)
    series = LatencyHistogram()
    for interval in closed:
        series.merge(interval.latency)
    assert series == _filled(all_latency)
    assert sum(interval.ok for interval in closed) == len(all_latency)


def _live_hdr_histograms() -> int:
    # type() rather than isinstance(): a weak proxy to a histogram passes isinstance too.
    return sum(1 for obj in gc.get_objects() if type(obj) is HdrHistogram)


def test_histograms_of_past_intervals_are_freed_without_the_garbage_collector() -> None:
    gc.collect()
    gc.disable()  # only reference counting frees memory now, as between the collector's rare full passes
    try:
        recorder = Recorder(warmup_s=2.0)
        before = _live_hdr_histograms()
        for second in range(60):
            for k in range(10):
                due = second + k / 10
                recorder.on_sent(due, due)
                recorder.on_answer(due, due, due + 0.003)
            interval = recorder.intervals.close(second + 1.0)
            # As the engine does with every second: a row, and the interval shipped between processes.
            interval.to_row()
            Interval.from_plain(msgpack.unpackb(msgpack.packb(interval.to_plain()))).to_row()
            del interval
        Recorder.from_snapshot(recorder.snapshot()).summary()
        assert recorder.latency.count == 580
        assert _live_hdr_histograms() <= before
    finally:
        gc.enable()


def test_a_reset_histogram_is_as_good_as_a_new_one() -> None:
    histogram = _filled([0.001, 0.5, 70.0, -1.0])
    histogram.reset()
    assert histogram == LatencyHistogram()
    assert histogram.summary_ms() == LatencyHistogram().summary_ms()
    histogram.record(0.002)
    assert histogram == _filled([0.002])
    assert histogram.histoblob() == _filled([0.002]).histoblob()


def test_a_time_series_without_totals_keeps_measured_answers_in_its_rows() -> None:
    stats = IntervalStats()
    stats.on_sent(0.1)
    stats.on_sent(0.2)
    stats.on_measured_answer(0.5, latency_s=0.004, service_s=0.003)
    stats.on_answer(0.6, latency_s=0.002, service_s=0.001, ok=True)
    row = stats.roll(1.0)
    assert (row["sent"], row["answered"], row["ok"], row["inflight"]) == (2, 2, 2, 0)
    assert row["max_ms"] == 4.0 and row["p50_ms"] == 2.0
    assert stats.roll(2.0)["ok"] == 0
