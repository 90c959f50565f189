"""Open-model load schedules: when each request is *meant* to be sent.

A schedule yields intended send times ("due times"), in seconds since the run's
start, never decreasing, and always ends (by duration and/or a request count).
The engine sends request i at its due time and measures latency from that time,
not from when it actually managed to send, so a stalled server cannot hide its
stall by slowing the sender down (wrk2's coordinated-omission correction).

One interface (:class:`Schedule`), one small class per load model, as in k6's
executors:

* :class:`ConstantRate` - a fixed rate, evenly spaced or Poisson.
* :class:`Stages` - k6's ramping-arrival-rate: linear ramps between targets.

The closed model (a fixed number of concurrent senders) has no due times and is
run by the engine itself; it has no class here.

This module is pure: no I/O, no clocks, no asyncio. Imports: the standard
library and relay.common.units only.
"""

from __future__ import annotations

import itertools
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from relay.common.units import parse_duration

__all__ = ["Arrival", "ConstantRate", "Schedule", "Stages", "Warmup"]

Arrival = Literal["even", "poisson"]
_ARRIVALS: tuple[str, ...] = ("even", "poisson")

# Request counts derived from rate x duration are rounded to this many decimals
# first, so 30 s at 0.1/s is 3 requests and not 4 (0.1 * 30 is 3.0000000000000004).
_COUNT_DECIMALS = 9


class Schedule(ABC):
    """A load model: intended send times for an open-model run."""

    @abstractmethod
    def due_times(self) -> Iterator[float]:
        """Yield due times in seconds since the run's start, non-decreasing, finitely many.

        Each call starts afresh and yields the same sequence (Poisson schedules
        are seeded), so a run can be repeated exactly.
        """

    @abstractmethod
    def target_rate_at(self, t_s: float) -> float:
        """The intended rate in requests per second at ``t_s`` (0 outside the run)."""

    @property
    @abstractmethod
    def total_duration_s(self) -> float | None:
        """The run's planned length; every due time is before it.

        ``None`` when the run ends only by a request count (Poisson arrivals
        with ``max_requests`` and no duration), where the end is not known ahead.
        """

    def shard(self, worker: int, n_workers: int) -> Iterator[float]:
        """Worker ``worker``'s share of the due times when ``n_workers`` processes split a run.

        Deals the due times out in turn (request k goes to worker k mod n), so
        the workers together send exactly this schedule, interleaved in time;
        giving each worker the schedule at ``rate / n`` instead would send n
        requests at once at every tick and round each share's count separately.
        """
        if not 0 <= worker < n_workers:
            raise ValueError(f"worker must be in 0..{n_workers - 1}, got {worker}")
        return itertools.islice(self.due_times(), worker, None, n_workers)


def _check_rate(name: str, rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ValueError(f"{name} must be a number of requests per second, got {rate!r}")
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"{name} must be a finite rate >= 0 requests per second, got {rate!r}")
    return float(rate)


def _check_arrival(arrival: str) -> str:
    if arrival not in _ARRIVALS:
        raise ValueError(f"arrival must be one of {', '.join(_ARRIVALS)}; got {arrival!r}")
    return arrival


def _check_max_requests(max_requests: int | None) -> int | None:
    if max_requests is None:
        return None
    if isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 0:
        raise ValueError(f"max_requests must be a whole number >= 0, got {max_requests!r}")
    return max_requests


def _resolve_seed(seed: int | None) -> int:
    # A run without an explicit seed still gets one, kept on the schedule, so
    # the report can print it and the same arrivals can be replayed.
    return random.SystemRandom().randrange(2**63) if seed is None else seed


class ConstantRate(Schedule):
    """``rate`` requests per second for ``duration_s`` and/or ``max_requests``.

    ``arrival='even'``: request i is due at ``i / rate`` (i = 0, 1, ...), so
    10 s at 1000/s is exactly 10,000 requests, the last due at 9.999 s.
    ``arrival='poisson'``: gaps are exponential with mean ``1 / rate`` (a Poisson
    process, first arrival after the first gap), drawn from ``random.Random(seed)``.
    """

    def __init__(
        self,
        rate: float,
        duration_s: float | str | None = None,
        max_requests: int | None = None,
        arrival: Arrival = "even",
        seed: int | None = None,
    ) -> None:
        self.rate = _check_rate("rate", rate)
        if self.rate == 0:
            raise ValueError("rate must be > 0 requests per second (a run at rate 0 sends nothing)")
        self.duration_s = None if duration_s is None else parse_duration(duration_s)
        self.max_requests = _check_max_requests(max_requests)
        if self.duration_s is None and self.max_requests is None:
            raise ValueError("a constant-rate schedule needs duration_s, max_requests, or both")
        self.arrival = _check_arrival(arrival)
        self.seed = _resolve_seed(seed)

    def __repr__(self) -> str:
        return (
            f"ConstantRate(rate={self.rate!r}, duration_s={self.duration_s!r}, "
            f"max_requests={self.max_requests!r}, arrival={self.arrival!r}, seed={self.seed!r})"
        )

    @property
    def total_duration_s(self) -> float | None:
        if self.duration_s is not None:
            if self.arrival == "even" and self.max_requests is not None:
                return min(self.duration_s, self.max_requests / self.rate)
            return self.duration_s
        if self.arrival == "even":
            assert self.max_requests is not None
            return self.max_requests / self.rate
        return None

    def target_rate_at(self, t_s: float) -> float:
        end_s = self.total_duration_s
        if t_s < 0 or (end_s is not None and t_s >= end_s):
            return 0.0
        return self.rate

    def due_times(self) -> Iterator[float]:
        if self.arrival == "even":
            return self._even()
        return self._poisson()

    def _even(self) -> Iterator[float]:
        count = self.max_requests if self.max_requests is not None else math.inf
        if self.duration_s is not None:
            count = min(count, math.ceil(round(self.duration_s * self.rate, _COUNT_DECIMALS)))
        rate = self.rate
        # i / rate for each i, not a running sum, so a long run does not drift.
        return (i / rate for i in range(int(count)))

    def _poisson(self) -> Iterator[float]:
        rng = random.Random(self.seed)
        rate = self.rate
        end_s = self.duration_s if self.duration_s is not None else math.inf
        left = self.max_requests if self.max_requests is not None else math.inf
        t_s = 0.0
        while left > 0:
            t_s += rng.expovariate(rate)
            if t_s >= end_s:
                return
            yield t_s
            left -= 1


@dataclass(frozen=True, slots=True)
class _Segment:
    """One linear piece of the rate curve, with the integral up to its start."""

    start_s: float
    duration_s: float
    from_rate: float
    to_rate: float
    requests_before: float  # integral of the rate over [0, start_s)
    requests_end: float  # integral over [0, start_s + duration_s)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def time_of(self, requests: float) -> float:
        """The time at which the integral reaches ``requests`` (inside this segment)."""
        delta = requests - self.requests_before
        if delta <= 0:
            return self.start_s
        a = self.from_rate
        slope_term = (self.to_rate - a) / (2.0 * self.duration_s)
        if slope_term == 0:
            offset_s = delta / a
        else:
            # Root of slope_term*x^2 + a*x - delta = 0 in the cancellation-free
            # form 2c / (b + sqrt(b^2 - 4ac)); holds for ramps up and down.
            root = math.sqrt(max(0.0, a * a + 4.0 * slope_term * delta))
            offset_s = 2.0 * delta / (a + root)
        return self.start_s + min(offset_s, self.duration_s)


class Stages(Schedule):
    """k6's ramping-arrival-rate: the rate moves linearly between stage targets.

    ``stages`` is a sequence of ``(duration_s, target_rate)``; over each stage the
    rate moves linearly from the previous target (``start_rate`` for the first)
    to this stage's target. A zero-length stage is a step change.

    The n-th request (n = 0, 1, ...) is due at the first moment the integral of
    the rate passes n, so a ramp 0 -> 100/s over 10 s is exactly 500 requests,
    a constant stage at r/s matches :class:`ConstantRate` (even), and a stretch at
    rate 0 sends nothing. ``arrival='poisson'`` gives a non-homogeneous Poisson
    process with this rate curve (unit-rate exponential gaps on the integral),
    seeded like :class:`ConstantRate`.
    """

    def __init__(
        self,
        stages: Sequence[tuple[float, float]],
        start_rate: float = 0.0,
        arrival: Arrival = "even",
        seed: int | None = None,
        max_requests: int | None = None,
    ) -> None:
        if not stages:
            raise ValueError("stages must list at least one (duration_s, target_rate) stage")
        self.start_rate = _check_rate("start_rate", start_rate)
        self.arrival = _check_arrival(arrival)
        self.seed = _resolve_seed(seed)
        self.max_requests = _check_max_requests(max_requests)

        parsed: list[tuple[float, float]] = []
        for index, stage in enumerate(stages):
            try:
                duration, target = stage
            except (TypeError, ValueError):
                raise ValueError(
                    f"stage {index}: expected a (duration_s, target_rate) pair, got {stage!r}"
                ) from None
            try:
                parsed.append((parse_duration(duration), _check_rate("target", target)))
            except ValueError as exc:
                raise ValueError(f"stage {index}: {exc}") from None
        self.stages: tuple[tuple[float, float], ...] = tuple(parsed)

        segments: list[_Segment] = []
        start_s = 0.0
        requests_before = 0.0
        rate = self.start_rate
        for duration_s, target in self.stages:
            if duration_s > 0:
                within = (rate + target) * duration_s / 2.0
                requests_end = round(requests_before + within, _COUNT_DECIMALS)
                segments.append(_Segment(start_s, duration_s, rate, target, requests_before, requests_end))
                requests_before = requests_end
                start_s += duration_s
            rate = target
        self._segments: tuple[_Segment, ...] = tuple(segments)
        self._duration_s = start_s
        self.expected_requests = requests_before
        """The integral of the rate over the whole run (the request count for even arrivals)."""

    @classmethod
    def from_scenario(
        cls,
        stages: Sequence[Mapping[str, object]],
        start_rate: float = 0.0,
        arrival: Arrival = "even",
        seed: int | None = None,
        max_requests: int | None = None,
    ) -> Stages:
        """Build from k6's form: ``[{"duration": "30s", "target": 200}, ...]``.

        Durations may be strings (``"30s"``, ``"1m30s"``) or numbers of seconds.
        """
        if isinstance(stages, Mapping | str | bytes):
            raise ValueError('stages must be a list like [{"duration": "30s", "target": 200}, ...]')
        pairs: list[tuple[float, float]] = []
        for index, stage in enumerate(stages):
            if not isinstance(stage, Mapping):
                raise ValueError(f'stage {index}: expected {{"duration": ..., "target": ...}}, got {stage!r}')
            unknown = set(stage) - {"duration", "target"}
            missing = {"duration", "target"} - set(stage)
            if missing or unknown:
                problems = []
                if missing:
                    problems.append(f"missing {', '.join(sorted(missing))}")
                if unknown:
                    problems.append(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
                raise ValueError(f"stage {index}: {'; '.join(problems)} (a stage has duration and target)")
            duration, target = stage["duration"], stage["target"]
            try:
                pairs.append((parse_duration(duration), _check_rate("target", target)))  # type: ignore[arg-type]
            except ValueError as exc:
                raise ValueError(f"stage {index}: {exc}") from None
        return cls(pairs, start_rate=start_rate, arrival=arrival, seed=seed, max_requests=max_requests)

    def __repr__(self) -> str:
        return (
            f"Stages(stages={list(self.stages)!r}, start_rate={self.start_rate!r}, "
            f"arrival={self.arrival!r}, seed={self.seed!r}, max_requests={self.max_requests!r})"
        )

    @property
    def total_duration_s(self) -> float:
        return self._duration_s

    def target_rate_at(self, t_s: float) -> float:
        for segment in self._segments:
            if segment.start_s <= t_s < segment.end_s:
                fraction = (t_s - segment.start_s) / segment.duration_s
                return segment.from_rate + (segment.to_rate - segment.from_rate) * fraction
        return 0.0

    def due_times(self) -> Iterator[float]:
        if self.arrival == "even":
            targets: Iterator[float] = (float(n) for n in itertools.count())
        else:
            targets = self._poisson_targets()
        return self._invert(targets)

    def _poisson_targets(self) -> Iterator[float]:
        rng = random.Random(self.seed)
        total = 0.0
        while True:
            total += rng.expovariate(1.0)
            yield total

    def _invert(self, targets: Iterator[float]) -> Iterator[float]:
        """Map increasing integral values to times; stop at the run's end or max_requests."""
        left = self.max_requests if self.max_requests is not None else math.inf
        segments = self._segments
        index = 0
        last_s = 0.0
        for target in targets:
            if left <= 0:
                return
            # ">=": a target reached exactly at a segment's end belongs to the next
            # segment that adds to the integral, which skips rate-0 stretches.
            while index < len(segments) and target >= segments[index].requests_end:
                index += 1
            if index == len(segments):
                return
            # Rounding inside time_of must not make times go backwards.
            last_s = max(last_s, segments[index].time_of(target))
            yield last_s
            left -= 1


@dataclass(frozen=True, slots=True)
class Warmup:
    """Requests due before ``warmup_s`` are sent and accounted, but kept out of figures."""

    warmup_s: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.warmup_s) or self.warmup_s < 0:
            raise ValueError(f"warmup must be a finite duration >= 0 s, got {self.warmup_s!r}")

    @classmethod
    def parse(cls, text: str | float) -> Warmup:
        """From a flag or scenario value such as ``"10s"``."""
        return cls(parse_duration(text))

    def is_warmup(self, due_s: float) -> bool:
        return due_s < self.warmup_s
