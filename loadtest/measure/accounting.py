"""Request accounting that always adds up: every sent request ends as ok, failed, transport-failed, timed out or
unanswered; dropped ones were never sent. Counts merge exactly across connections, processes and machines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Caps on distinct names, so a server that puts ids in close reasons or exception
#: names cannot grow memory without bound; the excess is counted under OTHER.
MAX_REASONS = 100
OTHER = "other"


def count_capped(counter: Counter[str], key: str, count: int = 1) -> None:
    """Add `count` under `key`, or under OTHER once MAX_REASONS distinct keys are known."""
    if key not in counter and len(counter) >= MAX_REASONS:
        key = OTHER
    counter[key] += count


# The counts a ledger reports (`Ledger.to_dict`, the summary's `requests`), in order; thresholds name them
# `requests.COUNT` (loadtest.thresholds reads them from here).
REQUEST_COUNTS: tuple[str, ...] = ("sent", "ok", "failed", "timeout", "dropped", "unanswered", "transport_failed")


@dataclass
class Ledger:
    """Request counts for one phase of a run. Every sent request ends in exactly one of
    ``ok``, ``failed`` (the executor raised), ``transport`` (the connection failed),
    ``timeout`` or ``unanswered`` (still in flight when the run ended). ``dropped``
    requests were never sent (the in-flight limit was full at their due time), so
    they stand apart from ``sent``."""

    sent: int = 0
    ok: int = 0
    failed_by_exception: Counter[str] = field(default_factory=Counter)
    transport_by_reason: Counter[str] = field(default_factory=Counter)
    timeout: int = 0
    unanswered: int = 0
    dropped: int = 0

    def add_failed(self, exception_name: str) -> None:
        count_capped(self.failed_by_exception, exception_name or "unknown")

    def add_transport(self, reason: str) -> None:
        count_capped(self.transport_by_reason, reason or "unknown")

    @property
    def failed(self) -> int:
        return sum(self.failed_by_exception.values())

    @property
    def transport_failed(self) -> int:
        return sum(self.transport_by_reason.values())

    @property
    def in_flight(self) -> int:
        """Sent and not yet ended; 0 once a finished run is fully accounted."""
        return self.sent - self.ok - self.failed - self.transport_failed - self.timeout - self.unanswered

    def check(self) -> None:
        """Raise ValueError unless sent == ok + failed + transport + timeout + unanswered."""
        counts = {
            "sent": self.sent,
            "ok": self.ok,
            "timeout": self.timeout,
            "unanswered": self.unanswered,
            "dropped": self.dropped,
        }
        negative = {name: value for name, value in counts.items() if value < 0}
        negative.update({f"failed[{k}]": v for k, v in self.failed_by_exception.items() if v < 0})
        negative.update({f"transport[{k}]": v for k, v in self.transport_by_reason.items() if v < 0})
        if negative:
            raise ValueError(f"negative request counts: {negative}")
        if self.in_flight != 0:
            raise ValueError(
                f"request counts do not add up: sent={self.sent} but ok={self.ok} + failed={self.failed} "
                f"+ transport={self.transport_failed} + timeout={self.timeout} "
                f"+ unanswered={self.unanswered} = {self.sent - self.in_flight}"
            )

    def merge(self, other: Ledger) -> None:
        self.sent += other.sent
        self.ok += other.ok
        for name, count in other.failed_by_exception.items():
            count_capped(self.failed_by_exception, name, count)
        for reason, count in other.transport_by_reason.items():
            count_capped(self.transport_by_reason, reason, count)
        self.timeout += other.timeout
        self.unanswered += other.unanswered
        self.dropped += other.dropped

    def errors(self) -> dict[str, int]:
        """Every ending other than ok and unanswered, by reason.

        Executor errors appear as ``executor: NAME``, transport failures by their
        reason as given (``close 1006``), timeouts as ``timeout``.
        """
        reasons: dict[str, int] = {}
        for name, count in self.failed_by_exception.most_common():
            if count:
                reasons[f"executor: {name}"] = count
        for reason, count in self.transport_by_reason.most_common():
            if count:
                reasons[reason] = reasons.get(reason, 0) + count
        if self.timeout:
            reasons["timeout"] = reasons.get("timeout", 0) + self.timeout
        return reasons

    def to_dict(self) -> dict[str, Any]:
        """Every count of REQUEST_COUNTS by name, and ``errors``."""
        counts: dict[str, Any] = {name: getattr(self, name) for name in REQUEST_COUNTS}
        counts["errors"] = self.errors()
        return counts

    def to_plain(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed_by_exception": dict(self.failed_by_exception),
            "transport_by_reason": dict(self.transport_by_reason),
            "timeout": self.timeout,
            "unanswered": self.unanswered,
            "dropped": self.dropped,
        }

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> Ledger:
        return cls(
            sent=int(data["sent"]),
            ok=int(data["ok"]),
            failed_by_exception=Counter({str(k): int(v) for k, v in data["failed_by_exception"].items()}),
            transport_by_reason=Counter({str(k): int(v) for k, v in data["transport_by_reason"].items()}),
            timeout=int(data["timeout"]),
            unanswered=int(data["unanswered"]),
            dropped=int(data["dropped"]),
        )


@dataclass
class Accounting(Ledger):
    """The measured requests' ledger, plus ``warmup``: the same counts for requests
    due during warm-up, which are kept out of every figure but still accounted."""

    warmup: Ledger = field(default_factory=Ledger)

    def ledger(self, warmup: bool) -> Ledger:
        return self.warmup if warmup else self

    def check(self) -> None:
        super().check()
        try:
            self.warmup.check()
        except ValueError as exc:
            raise ValueError(f"warm-up {exc}") from None

    def merge(self, other: Ledger) -> None:
        super().merge(other)
        if isinstance(other, Accounting):
            self.warmup.merge(other.warmup)

    def to_dict(self) -> dict[str, Any]:
        """The measured counts and errors (see :meth:`Ledger.to_dict`), and ``"warmup"``
        with the warm-up requests' counts in the same shape."""
        result = super().to_dict()
        result["warmup"] = self.warmup.to_dict()
        return result

    def to_plain(self) -> dict[str, Any]:
        result = super().to_plain()
        result["warmup"] = self.warmup.to_plain()
        return result

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> Accounting:
        measured = Ledger.from_plain(data)
        return cls(**vars(measured), warmup=Ledger.from_plain(data["warmup"]))
