"""loadtest.models.schedule: intended send times for the open-model load shapes."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.models.schedule import ConstantRate, Schedule, Stages, Warmup


def _non_decreasing(times: list[float]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(times))


# -- ConstantRate --


def test_even_constant_rate_gives_exactly_rate_times_duration_requests() -> None:
    due = list(ConstantRate(1000, 10).due_times())
    assert len(due) == 10_000
    assert due[0] == 0.0
    assert due[-1] == pytest.approx(9.999)
    assert due[1234] == pytest.approx(1.234)
    assert all(b > a for a, b in itertools.pairwise(due))
    assert all(t < 10 for t in due)


def test_even_rate_counts_are_not_thrown_off_by_float_rounding() -> None:
    # 0.1 * 30 is 3.0000000000000004 in floating point; a run still has 3 requests.
    assert len(list(ConstantRate(0.1, 30).due_times())) == 3
    assert len(list(ConstantRate(3, 1).due_times())) == 3
    assert len(list(ConstantRate(7, "2s").due_times())) == 14


def test_max_requests_bounds_a_constant_rate_run() -> None:
    capped = ConstantRate(100, 10, max_requests=5)
    assert list(capped.due_times()) == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04])
    assert capped.total_duration_s == pytest.approx(0.05)

    by_count = ConstantRate(10, max_requests=7)
    assert len(list(by_count.due_times())) == 7
    assert by_count.total_duration_s == pytest.approx(0.7)


def test_poisson_mean_rate_is_within_two_percent_over_100k_requests() -> None:
    due = list(ConstantRate(1000, max_requests=100_000, arrival="poisson", seed=7).due_times())
    assert len(due) == 100_000
    assert _non_decreasing(due)
    assert len(due) / due[-1] == pytest.approx(1000, rel=0.02)
    gaps = [b - a for a, b in itertools.pairwise(due)]
    # Exponential gaps: the standard deviation equals the mean (even spacing has none).
    assert statistics.pstdev(gaps) == pytest.approx(statistics.fmean(gaps), rel=0.05)


def test_poisson_schedule_is_reproducible_from_its_seed() -> None:
    first = list(ConstantRate(500, 2, arrival="poisson", seed=42).due_times())
    again = list(ConstantRate(500, 2, arrival="poisson", seed=42).due_times())
    other = list(ConstantRate(500, 2, arrival="poisson", seed=43).due_times())
    assert first == again
    assert first != other
    assert all(0 < t < 2 for t in first)


def test_unseeded_poisson_schedule_keeps_the_seed_it_picked() -> None:
    schedule = ConstantRate(200, 1, arrival="poisson")
    assert isinstance(schedule.seed, int)
    replay = ConstantRate(200, 1, arrival="poisson", seed=schedule.seed)
    assert list(schedule.due_times()) == list(replay.due_times())
    assert list(schedule.due_times()) == list(schedule.due_times())


def test_poisson_run_bounded_only_by_count_has_no_known_duration() -> None:
    assert ConstantRate(10, max_requests=3, arrival="poisson", seed=1).total_duration_s is None


def test_constant_rate_target_rate() -> None:
    schedule = ConstantRate(250, 4)
    assert schedule.target_rate_at(0) == 250
    assert schedule.target_rate_at(3.99) == 250
    assert schedule.target_rate_at(4) == 0
    assert schedule.target_rate_at(-1) == 0
    assert schedule.total_duration_s == 4


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"rate": 0, "duration_s": 10}, "rate must be > 0"),
        ({"rate": -5, "duration_s": 10}, ">= 0"),
        ({"rate": float("nan"), "duration_s": 10}, "finite"),
        ({"rate": 10}, "duration_s, max_requests"),
        ({"rate": 10, "duration_s": 1, "arrival": "uniform"}, "even, poisson"),
        ({"rate": 10, "duration_s": "ten seconds"}, "invalid duration"),
        ({"rate": 10, "max_requests": -1}, "max_requests"),
    ],
)
def test_constant_rate_rejects_bad_settings(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ConstantRate(**kwargs)


# -- Stages --


def test_ramp_from_0_to_100_over_10s_is_500_requests() -> None:
    schedule = Stages([(10, 100)])
    due = list(schedule.due_times())
    assert len(due) == 500
    assert _non_decreasing(due)
    assert all(0 <= t < 10 for t in due)
    # The integral of a ramp 0 -> 100/s is 5 t^2: request n is due at sqrt(n / 5).
    assert due[125] == pytest.approx(5.0)
    assert schedule.target_rate_at(5) == pytest.approx(50)


def test_constant_stage_matches_constant_rate() -> None:
    stages = list(Stages([(10, 1000)], start_rate=1000).due_times())
    constant = list(ConstantRate(1000, 10).due_times())
    assert stages == pytest.approx(constant, abs=1e-9)


def test_k6_scenario_form_integrates_each_stage() -> None:
    schedule = Stages.from_scenario(
        [
            {"duration": "30s", "target": 200},  # ramp up: 3000
            {"duration": "1m", "target": 200},  # hold: 12000
            {"duration": "30s", "target": 0},  # ramp down: 3000
        ]
    )
    due = list(schedule.due_times())
    assert len(due) == 18_000
    assert schedule.total_duration_s == 120
    assert sum(1 for t in due if t < 30) == 3000
    assert sum(1 for t in due if 30 <= t < 90) == 12_000
    assert schedule.target_rate_at(15) == pytest.approx(100)
    assert schedule.target_rate_at(60) == pytest.approx(200)
    assert schedule.target_rate_at(105) == pytest.approx(100)
    assert schedule.target_rate_at(120) == 0


def test_a_stage_at_rate_0_sends_nothing_and_ends() -> None:
    assert list(Stages([(5, 0)]).due_times()) == []
    assert list(Stages([(5, 0), (5, 0)], arrival="poisson", seed=1).due_times()) == []

    schedule = Stages([(1, 10), (0, 0), (5, 0), (1, 10)], start_rate=10)
    due = list(schedule.due_times())
    assert sum(1 for t in due if t < 1) == 10
    assert not any(1 <= t < 6 for t in due)  # the pause
    assert sum(1 for t in due if t >= 6) == 5  # ramp 0 -> 10 over 1 s
    assert len(due) == 15


def test_zero_length_stage_is_a_step_change() -> None:
    schedule = Stages([(0, 100), (10, 100)])
    assert len(list(schedule.due_times())) == 1000
    assert schedule.target_rate_at(0) == 100


def test_stages_respect_max_requests() -> None:
    assert len(list(Stages([(10, 100)], start_rate=100, max_requests=42).due_times())) == 42


def test_poisson_stages_follow_the_rate_curve() -> None:
    schedule = Stages([(50, 2000)], arrival="poisson", seed=11)
    due = list(schedule.due_times())
    # Expected count is the integral (50,000); sd is sqrt(50,000) ~ 0.45%.
    assert len(due) == pytest.approx(50_000, rel=0.02)
    assert _non_decreasing(due)
    # Arrivals thicken with the rate: the second half of a ramp holds ~3/4 of them.
    second_half = sum(1 for t in due if t >= 25)
    assert second_half / len(due) == pytest.approx(0.75, rel=0.02)
    assert list(schedule.due_times()) == due


def _integral(stages: list[tuple[float, float]], start_rate: float, t: float) -> float:
    total, begin, rate = 0.0, 0.0, start_rate
    for duration, target in stages:
        if duration > 0:
            span = min(max(t - begin, 0.0), duration)
            total += rate * span + (target - rate) * span * span / (2 * duration)
            begin += duration
        rate = target
    return total


@settings(max_examples=60, deadline=None)
@given(
    stages=st.lists(
        st.tuples(st.integers(0, 40).map(lambda n: n / 4), st.integers(0, 300)),
        min_size=1,
        max_size=5,
    ),
    start_rate=st.integers(0, 300),
)
def test_even_stages_put_the_nth_request_where_the_integral_reaches_n(
    stages: list[tuple[float, float]], start_rate: int
) -> None:
    schedule = Stages(stages, start_rate=start_rate)
    due = list(schedule.due_times())
    total = _integral(stages, start_rate, schedule.total_duration_s)
    assert len(due) == pytest.approx(total, abs=1.0)
    assert len(due) == math.ceil(schedule.expected_requests)
    assert _non_decreasing(due)
    assert all(0 <= t < schedule.total_duration_s for t in due)
    for n, t in enumerate(due):
        assert _integral(stages, start_rate, t) == pytest.approx(n, abs=1e-6)


def test_from_scenario_accepts_numbers_and_reports_the_bad_stage() -> None:
    assert len(list(Stages.from_scenario([{"duration": 2, "target": 10}], start_rate=10).due_times())) == 20
    with pytest.raises(ValueError, match=r"stage 1: missing target"):
        Stages.from_scenario([{"duration": "1s", "target": 1}, {"duration": "1s"}])
    with pytest.raises(ValueError, match=r"stage 0: unknown key\(s\) rate"):
        Stages.from_scenario([{"duration": "1s", "target": 1, "rate": 3}])
    with pytest.raises(ValueError, match=r"stage 0: invalid duration '30x'"):
        Stages.from_scenario([{"duration": "30x", "target": 1}])
    with pytest.raises(ValueError, match=r"stage 0: target must be a finite rate"):
        Stages.from_scenario([{"duration": "1s", "target": -1}])
    with pytest.raises(ValueError, match="stages must be a list"):
        Stages.from_scenario({"duration": "1s", "target": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        Stages([])


def test_both_models_share_the_schedule_interface() -> None:
    for schedule in (ConstantRate(10, 1), Stages([(1, 10)])):
        assert isinstance(schedule, Schedule)
        assert schedule.total_duration_s == 1
        assert iter(schedule.due_times()) is not None


def test_shards_split_a_run_exactly_and_interleaved() -> None:
    schedule = Stages([(10, 100)])  # 500 requests: not a multiple of 3
    shards = [list(schedule.shard(worker, 3)) for worker in range(3)]
    assert sorted(t for shard in shards for t in shard) == list(schedule.due_times())
    assert [len(shard) for shard in shards] == [167, 167, 166]
    assert shards[0][:2] < shards[1][:2] < shards[2][:2]
    with pytest.raises(ValueError):
        schedule.shard(3, 3)


# -- Warmup --


def test_warmup_marks_requests_due_before_it() -> None:
    warmup = Warmup.parse("10s")
    assert warmup.is_warmup(0.0)
    assert warmup.is_warmup(9.999)
    assert not warmup.is_warmup(10.0)
    assert not Warmup().is_warmup(0.0)
    with pytest.raises(ValueError):
        Warmup(-1.0)
