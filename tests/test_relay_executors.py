"""The built-in Executors, as a client of the relay sees them: echo, upper, sleep, fail and embed.

Most checks go through a relay on 127.0.0.1. The sleep distributions are checked on the delays the
Executor draws (not on wall time): their medians, and the spread that tells the three shapes apart.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import struct
from typing import Any

import pytest
from relay_process import exchange, relay_in_process, run_relay, ws_url

from relay.executors import (
    Chain,
    EchoExecutor,
    EmbedExecutor,
    ExecutorSpecError,
    FailExecutor,
    SleepExecutor,
    UpperExecutor,
    params_for,
    parse_executor_spec,
)
from relay.wire import DataRequest, Document, NdArray, proto_codec
from relay.wire.messages import parse_timestamp

TIMEOUT_S = 20.0


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT_S))


async def _json_replies(specs: list[str], requests: list[dict[str, Any]], **config: Any) -> list[dict[str, Any]]:
    async with relay_in_process(*specs, **config) as server:
        ex = await exchange(ws_url(server), [*requests, "{}"])
        assert ex.close_code == 1000
        return ex.json()


async def _bytes_replies(specs: list[str], requests: list[DataRequest]) -> list[DataRequest]:
    async with relay_in_process(*specs) as server:
        ex = await exchange(ws_url(server), [*(proto_codec.encode_request(r) for r in requests), b"\x00"], ["bytes"])
        assert ex.close_code == 1000
        return [proto_codec.decode_response(f) for f in ex.frames]


# ---- specs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "cls", "name"),
    [
        ("echo", EchoExecutor, "echo"),
        ("upper", UpperExecutor, "upper"),
        ("shout=upper", UpperExecutor, "shout"),
        ("sleeper=sleep:2ms", SleepExecutor, "sleeper"),
        ("sleep:exponential:5ms", SleepExecutor, "sleep"),
        ("sleep:lognormal:5ms:sigma=0.8", SleepExecutor, "sleep"),
        ("fail:0.1", FailExecutor, "fail"),
        ("upper=fail:/fail", FailExecutor, "upper"),
        ("embed:128", EmbedExecutor, "embed"),
        ("vec.v1=embed", EmbedExecutor, "vec.v1"),
    ],
)
def test_executor_specs(spec: str, cls: type, name: str) -> None:
    ex = parse_executor_spec(spec)
    assert type(ex) is cls
    assert ex.name == name


@pytest.mark.parametrize(
    "spec",
    [
        "bogus",
        "upper:extra=1=2",
        "sleep:weird:5ms",
        "sleep:5 parsecs",
        "sleep:lognormal:5ms:mu=1",
        "fail:abc",
        "fail:1.5",
        "fail:-0.1",
        "embed:zero",
        "embed:0",
        "bad name=upper",
        "upper:typo",
        "echo:1",
        "fail:0.1:0.2",
        "embed:8:8",
    ],
)
def test_bad_executor_specs_say_what_is_wrong(spec: str) -> None:
    with pytest.raises(ExecutorSpecError) as info:
        Chain.from_specs([spec])
    assert str(info.value)


def test_executor_names_must_be_unique() -> None:
    with pytest.raises(ExecutorSpecError, match="unique"):
        Chain.from_specs(["upper", "upper=echo"])


def test_parameters_prefixed_with_an_executor_name_reach_only_that_executor() -> None:
    params = {"sleep_ms": 5.0, "a__sleep_ms": 7.0, "b__other": 1.0}
    assert params_for("a", params) == {"sleep_ms": 7.0}
    assert params_for("b", params) == {"sleep_ms": 5.0, "other": 1.0}
    assert params_for("c", None) == {}


# ---- echo and upper ------------------------------------------------------------------------------


def test_echo_returns_documents_unchanged_in_both_modes() -> None:
    doc = {
        "id": "d1",
        "text": "Mixed Case",
        "tags": {"k": "v", "n": 2.0},
        "embedding": [0.5, -1.0],
        "uri": "file://x",
        "weight": 0.25,
    }
    (reply,) = run(_json_replies(["echo"], [{"data": [doc], "execEndpoint": "/index"}]))
    got = reply["data"][0]
    assert {k: got[k] for k in doc} == doc

    original = Document(
        id="d2", text="Mixed Case", tags={"k": "v"}, embedding=NdArray(struct.pack("<2f", 1.5, 2.5), (2,), "<f4")
    )
    (breply,) = run(_bytes_replies(["echo"], [DataRequest(request_id="e1", docs=[original])]))
    assert breply.docs == [original]


def test_upper_upper_cases_text_and_leaves_text_less_docs_alone() -> None:
    (reply,) = run(
        _json_replies(
            ["upper"], [{"data": [{"text": "héllo wörld"}, {"id": "no-text"}, {"text": ""}], "execEndpoint": "/x"}]
        )
    )
    assert [d["text"] for d in reply["data"]] == ["HÉLLO WÖRLD", None, ""]
    assert reply["data"][1]["id"] == "no-text"


def test_documents_without_id_get_one() -> None:
    (reply,) = run(_json_replies(["echo"], [{"data": [{"text": "a"}, {"text": "b"}]}]))
    ids = [d["id"] for d in reply["data"]]
    assert all(isinstance(i, str) and len(i) == 32 for i in ids)
    assert len(set(ids)) == 2


# ---- sleep ---------------------------------------------------------------------------------------


def _draws(spec: str, n: int = 4001) -> list[float]:
    ex = parse_executor_spec(spec)
    assert isinstance(ex, SleepExecutor)
    return [ex.delay_s() for _ in range(n)]


def test_fixed_sleep_is_always_the_same() -> None:
    assert set(_draws("sleep:2ms", 50)) == {0.002}
    assert set(_draws("sleep:1.5s", 10)) == {1.5}
    assert set(_draws("sleep", 10)) == {0.0}


@pytest.mark.parametrize("distribution", ["fixed", "exponential", "lognormal"])
def test_sleep_median_is_the_configured_one(distribution: str) -> None:
    draws = _draws(f"sleep:{distribution}:5ms")
    assert statistics.median(draws) == pytest.approx(0.005, rel=0.1)
    assert min(draws) >= 0


def test_sleep_distributions_have_their_own_shapes() -> None:
    expo = _draws("sleep:exponential:10ms")
    logn = _draws("sleep:lognormal:10ms")
    wide = _draws("sleep:lognormal:10ms:sigma=1")
    # An exponential with median m has mean m / ln 2; a lognormal has mean m * exp(sigma^2 / 2).
    assert statistics.fmean(expo) == pytest.approx(0.010 / math.log(2), rel=0.1)
    assert statistics.fmean(logn) == pytest.approx(0.010 * math.exp(0.5**2 / 2), rel=0.1)

    def iqr_ratio(xs: list[float]) -> float:
        q1, _, q3 = statistics.quantiles(xs, n=4)
        return q3 / q1

    # Lognormal: Q3/Q1 = exp(2 * 0.6745 * sigma).
    assert iqr_ratio(logn) == pytest.approx(math.exp(2 * 0.6745 * 0.5), rel=0.15)
    assert iqr_ratio(wide) == pytest.approx(math.exp(2 * 0.6745 * 1.0), rel=0.15)
    # Exponential: Q3/Q1 = ln 4 / ln(4/3).
    assert iqr_ratio(expo) == pytest.approx(math.log(4) / math.log(4 / 3), rel=0.15)


def test_sleep_ms_parameter_overrides_the_configured_delay() -> None:
    # The configured delay is a minute: both requests are answered only because the override applies,
    # and the one told to sleep less comes back first.
    requests = [
        {"data": [{"text": "slow"}], "parameters": {"sleep_ms": 400}},
        {"data": [{"text": "fast"}], "parameters": {"sleeper__sleep_ms": 0}},
    ]
    replies = run(_json_replies(["sleeper=sleep:60s"], requests))
    assert [r["data"][0]["text"] for r in replies] == ["fast", "slow"]
    assert replies[0]["parameters"] == {"sleeper__sleep_ms": 0.0}


def test_sleeping_requests_do_not_block_each_other() -> None:
    # Ten requests that each sleep 300 ms run side by side: every one is admitted before any is answered.
    requests = [{"data": [{"text": str(i)}], "parameters": {"sleep_ms": 300}} for i in range(10)]
    replies = run(_json_replies(["sleeper=sleep:0ms"], requests))
    sleeper_routes = [r["routes"][1] for r in replies]
    starts = [parse_timestamp(r["start_time"]) for r in sleeper_routes]
    ends = [parse_timestamp(r["end_time"]) for r in sleeper_routes]
    assert max(starts) < min(ends)


# ---- fail ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "n", "failures"), [("fail:0.1", 100, 10), ("fail:0.25", 40, 10), ("fail:0.5", 7, 3)])
def test_fail_fraction_fails_exactly_that_share(spec: str, n: int, failures: int) -> None:
    requests = [{"data": [{"text": str(i)}], "parameters": {"i": i}} for i in range(n)]
    replies = run(_json_replies([spec], requests))
    assert len(replies) == n
    failed = [int(r["parameters"]["i"]) for r in replies if r["header"].get("status", {}).get("code") == 1]
    assert len(failed) == failures
    # Spread evenly: after k requests, floor(k * fraction) have failed.
    fraction = float(spec.split(":")[1])
    for k in range(1, n + 1):
        assert sum(1 for i in failed if i < k) == math.floor(k * fraction + 1e-9)


def test_fail_fraction_counts_across_connections() -> None:
    async def go() -> int:
        async with relay_in_process("fail:0.1") as server:
            results = await asyncio.gather(
                *(exchange(ws_url(server), [*({"data": None} for _ in range(25)), "{}"]) for _ in range(4))
            )
            return sum(1 for ex in results for r in ex.json() if r["header"].get("status", {}).get("code") == 1)

    assert run(go()) == 10


@pytest.mark.parametrize(("spec", "failures"), [("fail", 5), ("fail:1", 5), ("fail:0", 0)])
def test_fail_all_or_nothing(spec: str, failures: int) -> None:
    replies = run(_json_replies([spec], [{"data": None} for _ in range(5)]))
    assert sum(1 for r in replies if "status" in r["header"]) == failures


def test_fail_on_an_endpoint_fails_only_that_endpoint() -> None:
    endpoints = ["/fail", "/index", "/failure", "/", "/fail"]
    requests = [{"data": [{"text": e}], "execEndpoint": e} for e in endpoints]
    replies = run(_json_replies(["upper", "f=fail:/fail"], requests))
    outcome = {r["data"][0]["text"].lower() + f"#{i}": "status" in r["header"] for i, r in enumerate(replies)}
    assert outcome == {"/fail#0": True, "/index#1": False, "/failure#2": False, "/#3": False, "/fail#4": True}
    err = replies[0]["header"]["status"]
    assert err["exception"]["name"] == "ValueError"
    assert err["exception"]["executor"] == "FailExecutor"
    assert replies[0]["routes"][-1]["executor"] == "f"
    assert replies[0]["routes"][-1]["status"] == err


# ---- embed ---------------------------------------------------------------------------------------


def test_embed_writes_a_deterministic_vector_of_the_given_dimension() -> None:
    texts = ["alpha", "beta", "alpha"]
    (reply,) = run(_json_replies(["embed:16"], [{"data": [{"text": t} for t in texts]}]))
    vectors = [d["embedding"] for d in reply["data"]]
    assert [len(v) for v in vectors] == [16, 16, 16]
    assert all(isinstance(x, float) and -1.0 <= x < 1.0 for v in vectors for x in v)
    assert vectors[0] == vectors[2], "same text, same vector"
    assert vectors[0] != vectors[1]
    assert len(set(vectors[0])) > 1


def test_embed_default_dimension_and_bytes_mode_agree_with_json() -> None:
    (jreply,) = run(_json_replies(["embed"], [{"data": [{"text": "same"}]}]))
    (breply,) = run(_bytes_replies(["embed"], [DataRequest(request_id="emb", docs=[Document(text="same")])]))
    emb = breply.docs[0].embedding
    assert emb is not None
    assert emb.shape == (128,)
    assert emb.dtype == "<f4"
    assert emb.to_list() == jreply["data"][0]["embedding"]


def test_embed_uses_the_id_when_there_is_no_text() -> None:
    (reply,) = run(_json_replies(["embed:8"], [{"data": [{"id": "doc-1"}, {"id": "doc-1"}, {"id": "doc-2"}]}]))
    a, b, c = (d["embedding"] for d in reply["data"])
    assert a == b != c


def test_embed_is_the_same_across_two_relay_processes() -> None:
    texts = ["hello", "world", "ünïcödé", ""]
    request = {"data": [{"text": t} for t in texts], "execEndpoint": "/index"}

    def vectors() -> list[list[float]]:
        with run_relay("-e", "embed:32") as relay:
            ex = run(exchange(relay.url + "/", [request, "{}"]))
            return [d["embedding"] for d in ex.json()[0]["data"]]

    first, second = vectors(), vectors()
    assert first == second
    assert len({tuple(v) for v in first}) == len(texts)
