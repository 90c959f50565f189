"""Durations and sizes as people write them in flags and scenario files.

This is the project's one place that turns "30s", "1h30m", "250ms" or "4KiB" into
numbers, and numbers back into short human text. Everything else (the relay's
config, the load tester's scenarios and thresholds) calls these functions, so a
duration written anywhere in flowrelay means the same thing.

Imports: the standard library only; nothing from the project, so both halves
(relay/ and loadtest/) may import it.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

__all__ = ["format_duration", "parse_duration", "parse_size"]

_DURATION_FORMS = (
    "a number of seconds (30, 2.5), or numbers with units ns, us (or µs), ms, s, m, h, "
    "alone or combined from largest to smallest: 250ms, 30s, 5m, 1h30m, 2m05s, 1.5h, 0"
)
_SIZE_FORMS = (
    "a whole number of bytes (512), or a number with a unit: B, kB/KB, MB, GB, TB (powers of 1000) "
    "or KiB, MiB, GiB, TiB (powers of 1024), e.g. 4KiB, 1MB, 1.5 MiB"
)

_DURATION_UNIT_S: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # MICRO SIGN
    "μs": 1e-6,  # GREEK SMALL LETTER MU: what many keyboards produce
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Rank of each unit, so "1h30m" passes and "30m1h" (almost certainly a typo) does not.
_DURATION_UNIT_RANK = {"h": 0, "m": 1, "s": 2, "ms": 3, "us": 4, "µs": 4, "μs": 4, "ns": 5}

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_BARE_NUMBER_RE = re.compile(rf"{_NUMBER}")
# Longer units first so "ms" is not read as "m" followed by a stray "s".
_DURATION_PART_RE = re.compile(rf"\s*({_NUMBER})\s*(ns|us|µs|μs|ms|s|m|h)")

_SIZE_UNIT_BYTES: dict[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(rf"({_NUMBER})\s*([A-Za-z]*)")


def parse_duration(text: str | float) -> float:
    """Return a duration in seconds.

    Accepts a bare number (seconds), or unit-suffixed parts such as ``250ms``,
    ``30s``, ``5m``, ``1h30m``, ``2.5s``, ``100us``; ints and floats pass through
    (scenario files parsed from YAML give numbers). Negative, NaN and infinite
    durations are rejected.
    """
    if isinstance(text, bool):
        # bool is an int subclass; True would silently mean one second.
        raise ValueError(f"invalid duration {text!r}: expected {_DURATION_FORMS}")
    if isinstance(text, int | float):
        seconds = float(text)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"invalid duration {text!r}: must be a finite number of seconds >= 0")
        return seconds
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected {_DURATION_FORMS}")

    stripped = text.strip()
    if _BARE_NUMBER_RE.fullmatch(stripped):
        return float(stripped)

    total_s = 0.0
    position = 0
    last_rank = -1
    for match in _DURATION_PART_RE.finditer(stripped):
        if match.start() != position:
            break
        number, unit = match.group(1), match.group(2)
        rank = _DURATION_UNIT_RANK[unit]
        if rank <= last_rank:
            raise ValueError(
                f"invalid duration {text!r}: units must go from largest to smallest, each once "
                f"(e.g. 1h30m); expected {_DURATION_FORMS}"
            )
        last_rank = rank
        total_s += float(number) * _DURATION_UNIT_S[unit]
        position = match.end()
    if position == 0 or position != len(stripped):
        raise ValueError(f"invalid duration {text!r}: expected {_DURATION_FORMS}")
    return total_s


def format_duration(seconds: float) -> str:
    """Return a short human form: ``850 µs``, ``1.2 ms``, ``35 s``, ``2m05s``, ``1h30m00s``.

    Below a minute the value keeps three significant digits; from a minute up it is
    rounded to whole seconds. The output is accepted by :func:`parse_duration`.
    """
    if math.isnan(seconds):
        return "nan"
    if math.isinf(seconds):
        return "inf" if seconds > 0 else "-inf"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0 s"

    # Each step: (upper bound in seconds, scale to the unit, unit). A value that
    # rounds up to the next unit's threshold (999.96 ms) moves up a unit instead
    # of printing "1e+03 ms".
    for limit_s, scale, unit in ((1e-6, 1e9, "ns"), (1e-3, 1e6, "µs"), (1.0, 1e3, "ms"), (60.0, 1.0, "s")):
        if seconds < limit_s:
            shown = float(f"{seconds * scale:.3g}")
            if shown < limit_s * scale:
                return f"{shown:g} {unit}"
    whole_s = round(seconds)
    hours, rest = divmod(whole_s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s"


def parse_size(text: str | int) -> int:
    """Return a size in bytes.

    Accepts a whole number of bytes (``512``) or a number with a unit: ``B``,
    ``kB``/``KB``, ``MB``, ``GB``, ``TB`` (powers of 1000) or ``KiB``, ``MiB``,
    ``GiB``, ``TiB`` (powers of 1024); units are case-insensitive. Fractional
    inputs (``1.5MiB``) are rounded to the nearest byte.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid size {text!r}: expected {_SIZE_FORMS}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"invalid size {text!r}: must be >= 0")
        return text
    if not isinstance(text, str):
        raise ValueError(f"invalid size {text!r}: expected {_SIZE_FORMS}")

    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid size {text!r}: expected {_SIZE_FORMS}")
    number, unit = match.group(1), match.group(2).lower()
    if unit and unit not in _SIZE_UNIT_BYTES:
        raise ValueError(f"invalid size {text!r}: unknown unit {match.group(2)!r}; expected {_SIZE_FORMS}")
    if not unit and "." in number:
        raise ValueError(f"invalid size {text!r}: a size without a unit must be a whole number of bytes")
    try:
        # Decimal, so "1.1MiB" is rounded once from the exact product, not from a float.
        size = Decimal(number) * _SIZE_UNIT_BYTES[unit or "b"]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid numbers
        raise ValueError(f"invalid size {text!r}: expected {_SIZE_FORMS}") from exc
    return int(size.to_integral_value())
