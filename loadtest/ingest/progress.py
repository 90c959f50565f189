"""Which input positions are settled (acknowledged or dead-lettered): a watermark and the ranges above it.

Answers come back out of order, so "done up to N" is not enough: every position below `watermark` is
settled, and `ranges` holds the settled half-open ranges above it, sorted, disjoint and not touching.
Marking the range that starts at the watermark moves the watermark up and swallows what follows. The
number of ranges is bounded by the gaps, i.e. by the batches not yet settled, which the delivery bounds
with its in-flight limit: memory stays flat however long the input. Pure data, no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any


class Settled:
    """The set of settled positions."""

    __slots__ = ("_starts", "ranges", "watermark")

    def __init__(self, watermark: int = 0, ranges: Iterable[Iterable[int]] = ()) -> None:
        self.watermark = watermark
        self.ranges: list[list[int]] = []
        self._starts: list[int] = []
        for start, end in (tuple(r) for r in ranges):
            self.mark(start, end)

    def is_settled(self, position: int) -> bool:
        if position < self.watermark:
            return True
        i = bisect.bisect_right(self._starts, position) - 1
        return i >= 0 and position < self.ranges[i][1]

    def mark(self, start: int, end: int) -> None:
        """Settle positions start..end-1."""
        if end <= start:
            return
        start = max(start, self.watermark)
        if end <= start:
            return
        ranges, starts = self.ranges, self._starts
        i = bisect.bisect_left(starts, start)
        # Merge with a range before that touches or overlaps.
        if i > 0 and ranges[i - 1][1] >= start:
            i -= 1
            start = ranges[i][0]
            end = max(end, ranges[i][1])
        j = i
        while j < len(ranges) and ranges[j][0] <= end:
            end = max(end, ranges[j][1])
            j += 1
        ranges[i:j] = [[start, end]]
        starts[i:j] = [start]
        if ranges[0][0] <= self.watermark:
            self.watermark = max(self.watermark, ranges[0][1])
            del ranges[0]
            del starts[0]

    def mark_positions(self, positions: Iterable[int], ascending: bool = False) -> None:
        """Settle positions given one by one (a batch's), as the runs they form. `ascending`: the caller
        knows them to be in ascending order, without repeats (a batch's are)."""
        if ascending and isinstance(positions, list | range) and positions and \
                positions[-1] - positions[0] == len(positions) - 1:
            # The usual batch: no gap (a resumed run's batches may have gaps, where settled records were).
            self.mark(positions[0], positions[-1] + 1)
            return
        run_start = run_end = -1
        for p in sorted(positions):
            if p == run_end:
                run_end += 1
                continue
            if run_start >= 0:
                self.mark(run_start, run_end)
            run_start, run_end = p, p + 1
        if run_start >= 0:
            self.mark(run_start, run_end)

    def high(self) -> int:
        """One past the highest settled position: nothing at or above it is settled."""
        return self.ranges[-1][1] if self.ranges else self.watermark

    def count(self) -> int:
        return self.watermark + sum(e - s for s, e in self.ranges)

    def to_plain(self) -> dict[str, Any]:
        return {"watermark": self.watermark, "done": [list(r) for r in self.ranges]}
