"""A replay's answers against the recorded ones: the shape of a before/after check of a Flow.

For each replayed request whose recording has its answer, `ReplayDiff` notes:

* status: ok -> ok, ok -> error, error -> ok, error -> error (the same or another exception); a request that
  fails now without an answer (transport failure, timeout, unanswered) counts as an error now, named so;
* documents: whether the answer's count changed, and, when the request's documents carried ids (a gateway makes
  up the others, so they differ on every run), whether the answer's ids changed;
* latency per endpoint, recorded vs now, on the same footing: a relay's recording measured its receipt to answer
  (the `gateway` route entry), so an answer that has a gateway entry is timed by it; a HAR recording measured the
  browser's round trip, and so is the replay then (from the actual send: the same thing a browser times);
* per hop (the gateway and each Executor, from the route entries), recorded vs now; and the hops an answer
  passes through now but did not then (an Executor added to the Flow), or then but not now (one removed).

A few examples of each change are kept (the request's place in the recording, its endpoint). Workers' diffs
merge exactly (histograms are HdrHistograms); `summary()` is the dict that goes into summary.json under
`replay_diff`, `format_diff` the table for the terminal. `ReplayComparison` is what the load engine holds: it
knows which recorded request each request in flight replays, and hands its answer (or failure) to the diff.

Pure: no I/O, no clocks. Imports: the standard library, loadtest.measure, relay.capture.format.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from loadtest.measure.histograms import LatencyHistogram
from loadtest.measure.hops import GATEWAY, OUTSIDE_GATEWAY, hop_spans
from relay.capture.format import LATENCY_GATEWAY, RecordedRequest
from relay.wire.messages import route_spans

OK = "ok"
MAX_ENDPOINTS = 32
OTHER_ENDPOINTS = "(other)"
MAX_EXAMPLES = 10
MAX_IDS_SHOWN = 3
TRANSITIONS = ("ok_to_ok", "ok_to_error", "error_to_ok", "error_to_error", "error_changed")


def _status(error: str | None) -> str:
    return OK if error is None else error


def _transition(recorded: str, now: str) -> str:
    if recorded == OK:
        return "ok_to_ok" if now == OK else "ok_to_error"
    if now == OK:
        return "error_to_ok"
    return "error_to_error" if now == recorded else "error_changed"


class _Pair:
    """Recorded and replayed timings of one endpoint or hop."""

    __slots__ = ("now", "recorded")

    def __init__(self) -> None:
        self.recorded = LatencyHistogram()
        self.now = LatencyHistogram()

    def merge(self, other: _Pair) -> None:
        self.recorded.merge(other.recorded)
        self.now.merge(other.now)

    def to_plain(self) -> list[bytes]:
        return [self.recorded.encode(), self.now.encode()]

    @classmethod
    def from_plain(cls, plain: list[bytes]) -> _Pair:
        pair = cls()
        pair.recorded, pair.now = LatencyHistogram.decode(plain[0]), LatencyHistogram.decode(plain[1])
        return pair

    def summary(self) -> dict[str, Any]:
        rec, now = self.recorded.summary_ms(), self.now.summary_ms()
        return {
            "count": self.now.count,
            "recorded_ms": {"p50": rec["p50"], "p99": rec["p99"]},
            "now_ms": {"p50": now["p50"], "p99": now["p99"]},
        }


class ReplayDiff:
    """One worker's (or the merged) comparison of a replay with its recording."""

    def __init__(self, latency_basis: str = LATENCY_GATEWAY) -> None:
        self.latency_basis = latency_basis
        self.compared = 0
        self.no_recorded_answer = 0
        self.transitions: dict[str, int] = dict.fromkeys(TRANSITIONS, 0)
        self.status_examples: list[dict[str, Any]] = []
        self.count_changed = 0
        self.ids_compared = 0
        self.ids_changed = 0
        self.doc_examples: list[dict[str, Any]] = []
        self.endpoints: dict[str, _Pair] = {}
        self.hops: dict[str, _Pair] = {}
        self.now_by_gateway = 0
        self.now_by_round_trip = 0
        self.hops_added: set[str] = set()
        self.hops_removed: set[str] = set()

    # ---- events ----------------------------------------------------------------------------------

    def on_answer(self, recorded: RecordedRequest, ids_comparable: bool, error: str | None, docs: int,
                  doc_ids: list[str] | None, spans_ns: Iterable[tuple[str, int]] | None, round_trip_s: float) -> None:
        """A replayed request's answer (`error`: the exception name of an error answer, else None; `spans_ns`: its
        route entries' spans, `route_spans()` of the answer)."""
        answer = recorded.answer
        if answer is None:
            self.no_recorded_answer += 1
            return
        self.compared += 1
        self._status(recorded, _status(answer.error if answer.is_error else None), _status(error))
        recorded_ids = answer.doc_ids
        recorded_count = len(recorded_ids) if recorded_ids is not None else None
        count_changed = recorded_count is not None and recorded_count != docs
        ids_changed = False
        if ids_comparable and recorded_ids is not None and doc_ids is not None:
            self.ids_compared += 1
            ids_changed = recorded_ids != doc_ids
        if count_changed or ids_changed:
            self.count_changed += count_changed
            self.ids_changed += ids_changed
            if len(self.doc_examples) < MAX_EXAMPLES:
                example: dict[str, Any] = {"request": recorded.index, "endpoint": recorded.endpoint,
                                           "recorded_docs": recorded_count, "now_docs": docs}
                if ids_changed:
                    now_set = set(doc_ids or ())
                    rec_set = set(recorded_ids or ())
                    example["missing_ids"] = [i for i in recorded_ids or () if i not in now_set][:MAX_IDS_SHOWN]
                    example["new_ids"] = [i for i in doc_ids or () if i not in rec_set][:MAX_IDS_SHOWN]
                self.doc_examples.append(example)
        if error is None and answer.error is None:
            self._timings(recorded, spans_ns, round_trip_s)

    def on_failure(self, recorded: RecordedRequest, reason: str) -> None:
        """A replayed request that got no answer (`reason`: `timeout`, `unanswered`, a transport failure)."""
        if recorded.answer is None:
            self.no_recorded_answer += 1
            return
        self.compared += 1
        answer = recorded.answer
        self._status(recorded, _status(answer.error if answer.is_error else None), reason)

    def _status(self, recorded: RecordedRequest, was: str, now: str) -> None:
        kind = _transition(was, now)
        self.transitions[kind] += 1
        if kind not in ("ok_to_ok", "error_to_error") and len(self.status_examples) < MAX_EXAMPLES:
            self.status_examples.append({"request": recorded.index, "endpoint": recorded.endpoint,
                                         "recorded": was, "now": now})

    def _pair(self, table: dict[str, _Pair], name: str, limit: int) -> _Pair:
        pair = table.get(name)
        if pair is None:
            if len(table) >= limit:
                name = OTHER_ENDPOINTS
                pair = table.get(name)
            if pair is None:
                pair = table[name] = _Pair()
        return pair

    def _timings(self, recorded: RecordedRequest, spans_ns: Iterable[tuple[str, int]] | None,
                 round_trip_s: float) -> None:
        answer = recorded.answer
        assert answer is not None
        now_spans = hop_spans(spans_ns, round_trip_s)
        if answer.latency_ns is not None:
            now_s = round_trip_s
            if self.latency_basis == LATENCY_GATEWAY and GATEWAY in now_spans:
                now_s = now_spans[GATEWAY]
                self.now_by_gateway += 1
            else:
                self.now_by_round_trip += 1
            pair = self._pair(self.endpoints, recorded.endpoint, MAX_ENDPOINTS)
            pair.recorded.record(answer.latency_ns / 1e9)
            pair.now.record(now_s)
        # The recording has no client round trip, hence no `outside_gateway` to compare.
        recorded_spans = hop_spans(route_spans(answer.routes), math.nan)
        if len(self.hops_added) < MAX_ENDPOINTS:
            self.hops_added.update(n for n in now_spans if n not in recorded_spans and n != OUTSIDE_GATEWAY)
        if len(self.hops_removed) < MAX_ENDPOINTS:
            self.hops_removed.update(n for n in recorded_spans if n not in now_spans)
        for name, span in recorded_spans.items():
            now_span = now_spans.get(name)
            if now_span is None or name == OUTSIDE_GATEWAY:
                continue
            pair = self._pair(self.hops, name, MAX_ENDPOINTS)
            pair.recorded.record(span)
            pair.now.record(now_span)

    # ---- across processes ----------------------------------------------------------------------

    def merge(self, other: ReplayDiff) -> None:
        self.compared += other.compared
        self.no_recorded_answer += other.no_recorded_answer
        for k, v in other.transitions.items():
            self.transitions[k] += v
        self.status_examples = (self.status_examples + other.status_examples)[:MAX_EXAMPLES]
        self.count_changed += other.count_changed
        self.ids_compared += other.ids_compared
        self.ids_changed += other.ids_changed
        self.doc_examples = (self.doc_examples + other.doc_examples)[:MAX_EXAMPLES]
        for mine, theirs in ((self.endpoints, other.endpoints), (self.hops, other.hops)):
            for name, pair in theirs.items():
                if name in mine:
                    mine[name].merge(pair)
                else:
                    mine[name] = pair
        self.now_by_gateway += other.now_by_gateway
        self.now_by_round_trip += other.now_by_round_trip
        self.hops_added |= other.hops_added
        self.hops_removed |= other.hops_removed

    def to_plain(self) -> dict[str, Any]:
        plain = {k: v for k, v in self.__dict__.items() if k not in ("endpoints", "hops")}
        plain["endpoints"] = {k: p.to_plain() for k, p in self.endpoints.items()}
        plain["hops"] = {k: p.to_plain() for k, p in self.hops.items()}
        plain["hops_added"] = sorted(self.hops_added)
        plain["hops_removed"] = sorted(self.hops_removed)
        return plain

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> ReplayDiff:
        diff = cls(plain["latency_basis"])
        for key, value in plain.items():
            if key == "endpoints" or key == "hops":
                setattr(diff, key, {k: _Pair.from_plain(v) for k, v in value.items()})
            elif key == "hops_added" or key == "hops_removed":
                setattr(diff, key, set(value))
            else:
                setattr(diff, key, value)
        return diff

    # ---- output --------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """summary.json's `replay_diff`."""
        if self.now_by_gateway and self.now_by_round_trip:
            now_basis = "mixed"
        elif self.now_by_gateway:
            now_basis = "gateway"
        else:
            now_basis = "round_trip"
        changed = self.transitions["ok_to_error"] + self.transitions["error_to_ok"] + self.transitions["error_changed"]
        return {
            "compared": self.compared,
            "no_recorded_answer": self.no_recorded_answer,
            "status": {**self.transitions, "changed": changed},
            "status_examples": self.status_examples,
            "docs": {"count_changed": self.count_changed, "ids_compared": self.ids_compared,
                     "ids_changed": self.ids_changed},
            "docs_examples": self.doc_examples,
            "latency_basis": {"recorded": self.latency_basis, "now": now_basis},
            "endpoints": {name: pair.summary() for name, pair in sorted(self.endpoints.items())},
            "hops": {name: pair.summary() for name, pair in self.hops.items()},
            "hops_added": sorted(self.hops_added),
            "hops_removed": sorted(self.hops_removed),
        }


class ReplayComparison:
    """The engine's side of a replay's diff: `sent` when request `rid` replays recorded request k of the plan,
    then `answered` or `failed` once for it."""

    def __init__(self, recorded: Sequence[RecordedRequest], ids_comparable: Sequence[bool],
                 latency_basis: str = LATENCY_GATEWAY) -> None:
        self.recorded = recorded
        self.ids_comparable = ids_comparable
        self.diff = ReplayDiff(latency_basis)
        self._in_flight: dict[str, int] = {}

    def sent(self, rid: str, k: int) -> None:
        self._in_flight[rid] = k

    def answered(self, rid: str, answer: Any, docs: int, error: str | None, round_trip_s: float) -> None:
        """`answer` offers `route_spans()` and, when its documents were read (WebSocket sessions), `doc_ids`."""
        k = self._in_flight.pop(rid, None)
        if k is not None:
            self.diff.on_answer(self.recorded[k], self.ids_comparable[k], error, docs,
                                getattr(answer, "doc_ids", None), answer.route_spans(), round_trip_s)

    def failed(self, rid: str, reason: str) -> None:
        k = self._in_flight.pop(rid, None)
        if k is not None:
            self.diff.on_failure(self.recorded[k], reason)


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_diff(diff: dict[str, Any]) -> str:
    """`summary()` as the table printed beside the run's summary."""
    status = diff["status"]
    docs = diff["docs"]
    basis = diff["latency_basis"]
    lines = [
        f"replay vs recording   {diff['compared']} answers compared"
        + (f" ({diff['no_recorded_answer']} requests had no recorded answer)" if diff["no_recorded_answer"] else ""),
        f"  status      ok->ok {status['ok_to_ok']}  ok->error {status['ok_to_error']}  "
        f"error->ok {status['error_to_ok']}  error->error {status['error_to_error']}  "
        f"error changed {status['error_changed']}",
    ]
    for ex in diff["status_examples"]:
        lines.append(f"    request {ex['request']} {ex['endpoint']}: {ex['recorded']} -> {ex['now']}")
    lines.append(f"  documents   count changed {docs['count_changed']}  ids changed {docs['ids_changed']} "
                 f"(of {docs['ids_compared']} with ids to compare)")
    for ex in diff["docs_examples"]:
        detail = f"{ex['recorded_docs']} -> {ex['now_docs']} docs"
        if "missing_ids" in ex:
            detail += f", missing {ex['missing_ids']}, new {ex['new_ids']}"
        lines.append(f"    request {ex['request']} {ex['endpoint']}: {detail}")
    rows = [("endpoint " + name, s) for name, s in diff["endpoints"].items()]
    rows += [("hop " + name, s) for name, s in diff["hops"].items()]
    if rows:
        lines.append("")
        lines.append(f"  {'':24s}{'count':>8s}{'rec p50':>10s}{'now p50':>10s}{'rec p99':>10s}{'now p99':>10s}  (ms)")
        for name, s in rows:
            rec, now = s["recorded_ms"], s["now_ms"]
            lines.append(f"  {name:24s}{s['count']:>8d}{_ms(rec['p50']):>10s}{_ms(now['p50']):>10s}"
                         f"{_ms(rec['p99']):>10s}{_ms(now['p99']):>10s}")
        lines.append(f"  (endpoint latency: recorded {basis['recorded']}, now {basis['now']})")
    if diff["hops_added"]:
        lines.append(f"  hops now, not recorded: {', '.join(diff['hops_added'])}")
    if diff["hops_removed"]:
        lines.append(f"  hops recorded, not now: {', '.join(diff['hops_removed'])}")
    return "\n".join(lines)
