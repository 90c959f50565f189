"""relay.common.units: durations and sizes as users write them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.common.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        ("2.5s", 2.5),
        ("100us", 100e-6),
        ("100µs", 100e-6),
        ("500ns", 500e-9),
        ("0", 0.0),
        ("12", 12.0),
        ("1.5", 1.5),
        ("2m05s", 125.0),
        ("1m30.5s", 90.5),
        ("1h 30m", 5400.0),
        ("1.2 ms", 0.0012),
        ("  30s ", 30.0),
        (45, 45.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration_accepts_the_documented_forms(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "text",
    ["", "abc", "30x", "30 seconds", "-5s", "-1", "30m1h", "1s1s", "s", "1e3", "nan", "5M", True, None, [1]],
)
def test_parse_duration_rejects_other_input_and_says_what_is_accepted(text: object) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_duration(text)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert "invalid duration" in message
    if isinstance(text, str):
        # The message teaches the accepted forms.
        assert "ms" in message and "1h30m" in message


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_parse_duration_rejects_non_finite_or_negative_numbers(value: float) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0 s"),
        (0.0012, "1.2 ms"),
        (0.0123456, "12.3 ms"),
        (0.25, "250 ms"),
        (0.00085, "850 µs"),
        (3e-8, "30 ns"),
        (35.0, "35 s"),
        (2.5, "2.5 s"),
        (125.0, "2m05s"),
        (5400.0, "1h30m00s"),
        (0.99996, "1 s"),
        (59.99, "1m00s"),
        (-0.0012, "-1.2 ms"),
    ],
)
def test_format_duration_is_short_and_human(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(min_value=1e-9, max_value=1e6, allow_nan=False))
def test_format_duration_output_parses_back_to_about_the_same_duration(seconds: float) -> None:
    back = parse_duration(format_duration(seconds))
    if seconds < 59.95:
        assert back == pytest.approx(seconds, rel=5e-3)
    else:
        assert abs(back - seconds) <= 0.5


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512", 512),
        ("4KiB", 4096),
        ("1MB", 1_000_000),
        ("1 MiB", 1_048_576),
        ("1.5MiB", 1_572_864),
        ("10kb", 10_000),
        ("2GiB", 2 * 1024**3),
        ("1TB", 10**12),
        ("0", 0),
        ("7B", 7),
        (2048, 2048),
    ],
)
def test_parse_size_accepts_decimal_and_binary_units(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "4XB", "4KB/s", "1.5", "-1", "-1KB", "KiB", True, None, -3])
def test_parse_size_rejects_other_input(text: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)  # type: ignore[arg-type]


def test_parse_size_error_lists_the_units() -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_size("4XB")
    assert "KiB" in str(excinfo.value) and "MB" in str(excinfo.value)
