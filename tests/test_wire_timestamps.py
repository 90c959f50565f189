"""Route timestamps: integer nanoseconds <-> the RFC 3339 text of the json subprotocol.

`format_timestamp` must write what protobuf's JSON mapping writes for a `google.protobuf.Timestamp`
(UTC, `Z`, 0, 3, 6 or 9 fractional digits: the fewest that hold the value), since that is what a Jina
gateway's `MessageToDict` produces (JINA-WIRE.md §3.3, §5.4). protobuf's own `Timestamp` is the oracle.
`parse_timestamp` must also read the HTTP gateway's `isoformat()` text (`+00:00`), other offsets and
fractions of any length.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.wire.messages import format_timestamp, now_ns, parse_timestamp

NS = 1_000_000_000
# 2026-11-26T21:21:36Z, a second from the captured Flow's clock.
T0 = 1_795_728_096 * NS
# The range a google.protobuf.Timestamp may hold: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
MIN_NS = -62_135_596_800 * NS
MAX_NS = 253_402_300_799 * NS + 999_999_999

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.(\d{3}|\d{6}|\d{9}))?Z$")


def protobuf_text(ns: int) -> str:
    ts = Timestamp()
    ts.FromNanoseconds(ns)
    return ts.ToJsonString()


def protobuf_ns(text: str) -> int:
    ts = Timestamp()
    ts.FromJsonString(text)
    return ts.ToNanoseconds()


# ---- format ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (T0, "2026-11-26T21:21:36Z"),
        (T0 + 125_000_000, "2026-11-26T21:21:36.125Z"),
        (T0 + 100_000_000, "2026-11-26T21:21:36.100Z"),
        (T0 + 1_000_000, "2026-11-26T21:21:36.001Z"),
        (T0 + 125_848_000, "2026-11-26T21:21:36.125848Z"),
        (T0 + 125_800_000, "2026-11-26T21:21:36.125800Z"),
        (T0 + 1_000, "2026-11-26T21:21:36.000001Z"),
        (T0 + 125_848_001, "2026-11-26T21:21:36.125848001Z"),
        (T0 + 1, "2026-11-26T21:21:36.000000001Z"),
        (T0 + 999_999_999, "2026-11-26T21:21:36.999999999Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
        (MIN_NS, "0001-01-01T00:00:00Z"),
        (MAX_NS, "9999-12-31T23:59:59.999999999Z"),
    ],
)
def test_format_writes_the_fewest_of_0_3_6_9_digits(ns: int, text: str) -> None:
    assert format_timestamp(ns) == text
    assert format_timestamp(ns) == protobuf_text(ns)


def test_format_of_a_captured_route_time() -> None:
    # routes[0].start_time of i_json_index, as the gateway wrote it.
    assert format_timestamp(1_795_728_115_613_803_000) == "2026-11-26T21:21:55.613803Z"


def test_now_has_microsecond_resolution_like_a_jina_gateway() -> None:
    ns = now_ns()
    assert ns % 1000 == 0
    assert RFC3339_UTC.match(format_timestamp(ns))
    assert re.search(r"\.\d{9}Z$", format_timestamp(ns)) is None


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=MIN_NS, max_value=MAX_NS))
def test_format_equals_protobuf_json_mapping(ns: int) -> None:
    text = format_timestamp(ns)
    assert text == protobuf_text(ns)
    assert RFC3339_UTC.match(text)


# ---- parse -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2026-11-26T21:21:36Z", T0),
        ("2026-11-26T21:21:36z", T0),
        ("2026-11-26t21:21:36.5Z", T0 + 500_000_000),
        ("2026-11-26T21:21:36+00:00", T0),
        ("2026-11-26T21:21:36-00:00", T0),
        ("2026-11-26T21:21:36.125848Z", T0 + 125_848_000),
        ("2026-11-26T21:21:36.125848+00:00", T0 + 125_848_000),
        ("2026-11-26T21:21:36.1Z", T0 + 100_000_000),
        ("2026-11-26T21:21:36.12Z", T0 + 120_000_000),
        ("2026-11-26T21:21:36.1234Z", T0 + 123_400_000),
        ("2026-11-26T21:21:36.12345Z", T0 + 123_450_000),
        ("2026-11-26T21:21:36.1234567Z", T0 + 123_456_700),
        ("2026-11-26T21:21:36.12345678Z", T0 + 123_456_780),
        ("2026-11-26T21:21:36.123456789Z", T0 + 123_456_789),
        # Beyond nanoseconds: the extra digits are dropped, not rounded.
        ("2026-11-26T21:21:36.123456789999Z", T0 + 123_456_789),
        # Local time with an offset: 21:21:36+05:30 is 15:51:36Z.
        ("2026-11-26T21:21:36+05:30", T0 - (5 * 3600 + 30 * 60) * NS),
        ("2026-11-26T21:21:36.25-08:00", T0 + 8 * 3600 * NS + 250_000_000),
        ("2026-11-27T00:21:36+03:00", T0),
        ("1970-01-01T00:00:00Z", 0),
        ("0001-01-01T00:00:00Z", MIN_NS),
        ("9999-12-31T23:59:59.999999999Z", MAX_NS),
    ],
)
def test_parse(text: str, ns: int) -> None:
    assert parse_timestamp(text) == ns


def test_parse_reads_the_http_gateways_isoformat() -> None:
    # routes[0] of a_legacy_http/post_index.txt: Python's isoformat(), `+00:00`, 6 digits.
    assert parse_timestamp("2026-11-26T21:23:40.739553+00:00") == protobuf_ns("2026-11-26T21:23:40.739553Z")
    # isoformat() drops the fraction entirely when the microseconds are 0.
    assert parse_timestamp("2026-11-26T21:23:40+00:00") == 1_795_728_220 * NS


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2026-11-26", "2026-13-01T00:00:00Z", "2026-11-26 21:21:36Z", "26/11/2026T21:21:36Z"],
)
def test_parse_rejects_text_that_is_not_a_timestamp(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=MIN_NS, max_value=MAX_NS))
def test_parse_inverts_format(ns: int) -> None:
    assert parse_timestamp(format_timestamp(ns)) == ns


@settings(max_examples=300, deadline=None)
@given(
    seconds=st.integers(min_value=0, max_value=4_102_444_800),  # 1970 .. 2100
    digits=st.integers(min_value=0, max_value=9),
    fraction=st.integers(min_value=0, max_value=999_999_999),
    offset_minutes=st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    zulu=st.booleans(),
)
def test_parse_agrees_with_protobuf_on_any_fraction_and_offset(
    seconds: int, digits: int, fraction: int, offset_minutes: int, zulu: bool
) -> None:
    if zulu:
        offset_minutes = 0
    tz = timezone(timedelta(minutes=offset_minutes))
    local = datetime.fromtimestamp(seconds, UTC).astimezone(tz)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{fraction:09d}"[:digits]
    if zulu:
        text += "Z"
    else:
        sign = "-" if offset_minutes < 0 else "+"
        hh, mm = divmod(abs(offset_minutes), 60)
        text += f"{sign}{hh:02d}:{mm:02d}"
    expected = seconds * NS + (int(f"{fraction:09d}"[:digits].ljust(9, "0")) if digits else 0)
    assert protobuf_ns(text) == expected
    assert parse_timestamp(text) == expected
