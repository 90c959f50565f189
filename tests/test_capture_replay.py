"""Capture and replay end to end: `flowrelay serve --record DIR` with real clients on every door, then
`flowrelay load URL --replay DIR` against a gateway that logs what arrives (tests/load_helpers.FakeGateway) or
against another relay.

What a user would check: the replay sends the same bodies in the same order, each recorded connection on a
session of its own, with the recorded gaps or half of them at `--speed 2`; a bytes recording replays to a json
target; every door's traffic is recorded and replays; the diff beside the summary names the requests whose status
changed; `--procs` splits by connection; sampling and redaction hold through the relay; a relay killed -9 loses at
most its last second; bad options are refused before any traffic.

Gaps are checked twice. The replay's schedule (its due times, from `--log-requests`) must reproduce the recorded
gaps divided by the speed exactly: that is the model, and it does not depend on the machine. The gaps at which
frames arrived are wall-clock measurements on a machine shared with other work, where a process is now and then
woken 4 ms or more late (see ../shared/DESIGN.md); they are held to the issue's 3 ms by their median, which a few
late wake-ups cannot move, while their p90 is the figure bench/replay_gaps.py measures and the README reports.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import os
import re
import signal
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from capture_helpers import (
    CORRELATION_KEY,
    by_connection,
    bytes_frame,
    json_frame,
    normalised,
    record_connections,
    send_with_gaps,
)
from load_helpers import cli_summary, fake_gateway, read_request_log, run_load_cli
from relay_process import LOOPBACK, flowrelay_command, run_relay
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from relay.capture.reader import Recording, read_recording
from relay.wire import json_codec, proto_codec
from relay.wire.documents import Document
from relay.wire.messages import DataRequest
from relay.wire.proto import jina_pb2_grpc

# Milliseconds between a connection's requests: irregular, and each far from its neighbours.
GAPS_MS = (7, 31, 12, 58, 3, 22, 90, 15, 41, 9, 66, 27, 5, 48, 18, 75, 11, 36, 4, 52, 25, 83, 14, 39)
GAP_BOUND_MS = 3.0


# ---- clients -------------------------------------------------------------------------------------


def _gaps_ms(times_ns: Sequence[float]) -> list[float]:
    return [(b - a) / 1e6 for a, b in itertools.pairwise(times_ns)]


def _recordedby_connection(recording: Recording) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for r in recording.requests:
        out.setdefault(r.conn, []).append(r)
    return out


def _record_two_connections(folder: Path) -> tuple[list[str], list[bytes]]:
    json_frames = [json_frame(f"j{i}") for i in range(len(GAPS_MS))]
    bytes_frames = [bytes_frame(f"b{i}", f"d{i}") for i in range(len(GAPS_MS))]
    with run_relay("-e", "upper", "--record", str(folder)) as relay:
        async def both() -> None:
            await asyncio.gather(
                send_with_gaps(relay.url, "json", json_frames, GAPS_MS),
                send_with_gaps(relay.url, "bytes", bytes_frames, GAPS_MS[::-1], start_delay_s=0.013),
            )
        asyncio.run(both())
    return json_frames, bytes_frames


# ---- the replay ----------------------------------------------------------------------------------


def test_a_replay_sends_the_same_bodies_in_order_with_the_recorded_gaps(tmp_path: Path) -> None:
    json_frames, bytes_frames = _record_two_connections(tmp_path / "rec")
    recording = read_recording(tmp_path / "rec")
    assert len(recording.requests) == 2 * len(GAPS_MS) and recording.answered == len(recording.requests)
    recorded = _recordedby_connection(recording)
    sent_by = {"json": json_frames, "bytes": bytes_frames}

    for speed in (1, 2):
        with fake_gateway(delay_s=0.0) as gw:
            done = run_load_cli(gw.url, "--replay", str(tmp_path / "rec"), "--speed", str(speed), "--json",
                                "--quiet", "--log-requests", "--out", str(tmp_path / f"out{speed}"))
            assert done.returncode == 0, done.stderr
            arrivals = by_connection(gw.arrivals)
        summary = cli_summary(done)
        assert summary["model"] == "replay" and summary["requests"]["sent"] == len(recording.requests)
        assert summary["requests"]["ok"] == len(recording.requests)
        # The schedule: every request due at its recorded offset divided by the speed (due_s in seconds).
        due_ns = sorted(rec[1] * 1e9 for rec in read_request_log(tmp_path / f"out{speed}" / "requests.msgpack"))
        first = recording.requests[0].mono_ns
        assert due_ns == pytest.approx([(r.mono_ns - first) / speed for r in recording.requests], abs=1e3)
        # Each recorded connection on a session of its own, in its own subprotocol.
        assert sorted(a[0].subprotocol or "" for a in arrivals.values()) == ["bytes", "json"]
        for got in arrivals.values():
            subprotocol = got[0].subprotocol
            conn = next(c for c in recording.connections.values() if c.subprotocol == subprotocol)
            assert subprotocol is not None
            # Same bodies, same order: what the client sent, but for the id a replay stamps.
            assert [normalised(a.frame, subprotocol) for a in got] == [
                normalised(f, subprotocol) for f in sent_by[subprotocol]]
            want = [g / speed for g in _gaps_ms([r.mono_ns for r in recorded[conn.conn]])]
            have = _gaps_ms([a.mono_ns for a in got])
            errors = [abs(h - w) for h, w in zip(have, want, strict=True)]
            assert statistics.median(errors) <= GAP_BOUND_MS, (speed, subprotocol, errors)


def test_a_bytes_recording_replays_to_a_json_target(tmp_path: Path) -> None:
    frames = [bytes_frame(f"b{i}", f"d{i}", endpoint=f"/e{i % 3}") for i in range(6)]
    with run_relay("-e", "upper", "--record", str(tmp_path / "rec")) as relay:
        asyncio.run(send_with_gaps(relay.url, "bytes", frames, (5,)))
    with fake_gateway(delay_s=0.0) as gw:
        done = run_load_cli(gw.url, "--replay", str(tmp_path / "rec"), "--subprotocol", "json", "--json", "--quiet")
        assert done.returncode == 0, done.stderr
        arrivals = list(gw.arrivals)
    assert cli_summary(done)["requests"]["ok"] == 6
    assert {a.subprotocol for a in arrivals} == {"json"} and all(isinstance(a.frame, str) for a in arrivals)
    for arrival, frame in zip(arrivals, frames, strict=True):
        sent = proto_codec.decode(frame)
        got = json_codec.decode_request(arrival.frame)
        assert isinstance(got, DataRequest)
        assert got.exec_endpoint == sent.exec_endpoint and got.docs == sent.docs
        assert got.parameters is not None and CORRELATION_KEY in got.parameters


def _grpc_port(relay: Any) -> int:
    """The gRPC door's port, from the line the relay prints once it listens (after its WebSocket line)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"serving grpc://[^:]+:(\d+)/", relay.output())
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no gRPC door in:\n{relay.output()}")


def test_every_door_is_recorded_and_replays_against_any_protocol(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    with run_relay("-e", "upper", "--grpc-port", "0", "--record", str(rec)) as relay:
        asyncio.run(send_with_gaps(relay.url, "json", [json_frame("w1"), json_frame("w2")], (5,)))
        asyncio.run(send_with_gaps(relay.url, "bytes", [bytes_frame("b1", "x1"), bytes_frame("b2", "x2")], (5,)))
        keep_alive = http.client.HTTPConnection(LOOPBACK, relay.port, timeout=10)
        for i in range(2):
            keep_alive.request("POST", "/index", body=orjson.dumps({"data": [{"id": f"h{i}", "text": "h"}]}),
                               headers={"Content-Type": "application/json"})
            assert keep_alive.getresponse().read()
        keep_alive.close()
        with grpc.insecure_channel(f"{LOOPBACK}:{_grpc_port(relay)}") as channel:
            stub = jina_pb2_grpc.JinaRPCStub(channel)
            requests = [proto_codec.to_proto(DataRequest(request_id=f"g{i}", exec_endpoint="/g",
                                                         docs=[Document(id=f"g{i}", text="g")])) for i in range(2)]
            assert len(list(stub.Call(iter(requests), timeout=10))) == 2
    recording = read_recording(rec)
    doors = sorted((c.door, c.subprotocol, c.requests) for c in recording.connections.values())
    assert doors == [("grpc", "bytes", 2), ("http", "json", 2), ("websocket", "bytes", 2), ("websocket", "json", 2)]
    assert {r.endpoint for r in recording.requests} == {"/index", "/search", "/g"}

    with run_relay("-e", "upper", "--grpc-port", "0") as target:
        for url in (target.url, f"grpc://{LOOPBACK}:{_grpc_port(target)}", target.http_url):
            done = run_load_cli(url, "--replay", str(rec), "--json", "--quiet")
            assert done.returncode == 0, (url, done.stderr)
            summary = cli_summary(done)
            # HTTP/1.1 carries one request at a time: the gRPC stream's back-to-back pair cannot both go out at
            # their due time on one connection, and a request is dropped (counted) rather than sent late.
            sent = 8 - summary["requests"]["dropped"] if url.startswith("http") else 8
            assert summary["requests"]["ok"] == summary["requests"]["sent"] == sent, (url, summary["requests"])
            diff = summary["replay_diff"]
            assert diff["compared"] == sent and diff["status"]["ok_to_ok"] == sent, (url, diff)
            assert diff["docs"]["count_changed"] == 0


def test_the_diff_names_requests_whose_status_changed(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    frames = [json_frame(f"d{i}", endpoint="/fail" if i % 3 == 0 else "/index") for i in range(9)]
    with run_relay("-e", "upper", "--record", str(rec)) as relay:
        asyncio.run(send_with_gaps(relay.url, "json", frames, (4,)))
    with run_relay("-e", "upper", "-e", "fail:/fail") as changed:
        done = run_load_cli(changed.url, "--replay", str(rec), "--threshold", "requests.failed==0", "--quiet",
                            "--out", str(tmp_path / "out"))
    assert done.returncode == 99, done.stderr  # the threshold saw the failures
    assert "ok->ok 6  ok->error 3  error->ok 0" in done.stdout
    assert "request 0 /fail: ok -> ValueError" in done.stdout
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    diff = summary["replay_diff"]
    assert diff["status"]["ok_to_error"] == 3 and diff["docs"]["ids_changed"] == 0
    assert set(diff["endpoints"]) == {"/index"}  # latencies compared where both answers are good
    assert diff["endpoints"]["/index"]["count"] == 6 and diff["endpoints"]["/index"]["now_ms"]["p50"] is not None
    assert "upper" in diff["hops"]


def test_procs_split_a_replay_by_recorded_connection(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    streams = [[json_frame(f"c{c}-{i}") for i in range(5)] for c in range(3)]
    record_connections(rec, streams)
    with fake_gateway(delay_s=0.0) as gw:
        done = run_load_cli(gw.url, "--replay", str(rec), "--procs", "2", "--json", "--quiet")
        assert done.returncode == 0, done.stderr
        arrivals = by_connection(gw.arrivals)
    assert cli_summary(done)["requests"]["ok"] == 15
    assert len(arrivals) == 3
    got = sorted(orjson.dumps([normalised(a.frame, "json") for a in conn]) for conn in arrivals.values())
    assert got == sorted(orjson.dumps([normalised(f, "json") for f in s]) for s in streams)


def test_sampling_and_redaction_hold_through_the_relay(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    with run_relay("-e", "upper", "--record", str(rec), "--record-sample", "0.5",
                   "--record-redact", "tags.email") as relay:
        for c in range(4):
            frames = [json_frame(f"c{c}-{i}", tags={"email": f"user{c}@example.com", "plan": "pro"})
                      for i in range(3)]
            asyncio.run(send_with_gaps(relay.url, "json", frames, (2,)))
    recording = read_recording(rec)
    assert [c.requests for c in recording.connections.values()] == [3, 3]  # whole connections, half of them
    assert recording.meta["redacted"] == ["tags.email"]
    for r in recording.requests:
        doc = orjson.loads(r.body)["data"][0]
        assert doc["tags"]["plan"] == "pro" and doc["text"].startswith("text of c")
        assert "@" not in doc["tags"]["email"] and len(doc["tags"]["email"]) == len("user1@example.com")


def test_a_relay_killed_while_recording_loses_at_most_the_last_second(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    answered_at: dict[str, int] = {}
    with run_relay("-e", "upper", "--record", str(rec)) as relay:
        async def until_killed() -> int:
            killed_at = 0
            async with connect(relay.url, subprotocols=["json"], compression=None) as ws:
                async def read() -> None:
                    try:
                        async for message in ws:
                            answer = orjson.loads(message)
                            answered_at[answer["data"][0]["id"]] = time.monotonic_ns()
                    except ConnectionClosed:
                        pass
                reader = asyncio.create_task(read())
                start = time.monotonic()
                i = 0
                while time.monotonic() - start < 2.7:
                    await ws.send(json_frame(f"k{i}"))
                    i += 1
                    await asyncio.sleep(0.004)
                killed_at = time.monotonic_ns()
                os.kill(relay.pid, signal.SIGKILL)
                await asyncio.wait_for(reader, 10)
            return killed_at
        killed_at = asyncio.run(until_killed())
    recording = read_recording(rec)  # a torn last frame, if any, is skipped
    recorded = {orjson.loads(r.body)["data"][0]["id"] for r in recording.requests}
    settled = {doc for doc, t in answered_at.items() if t < killed_at - 1_000_000_000}
    assert len(settled) > 100
    assert settled <= recorded, f"{len(settled - recorded)} requests answered over a second before the kill are lost"
    info = orjson.loads(
        __import__("subprocess").run([*flowrelay_command(), "record", "info", str(rec), "--json"],
                                     capture_output=True, text=True, timeout=60, check=True).stdout)
    assert info["complete"] is False and info["requests"] >= len(settled)


# ---- usage errors ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rec = tmp_path_factory.mktemp("capture") / "rec"
    with run_relay("-e", "echo", "--record", str(rec)) as relay:
        asyncio.run(send_with_gaps(relay.url, "json", [json_frame("a"), json_frame("b")], (2,)))
    return rec


@pytest.mark.parametrize(("args", "words"), [
    (["--concurrency", "2"], "takes its requests"),
    (["--connections", "3"], "takes its requests"),
    (["--endpoint", "/x"], "takes its requests"),
    (["--loop"], "--loop repeats the recording without end"),
    (["--speed", "2", "--rate", "10"], "--speed and --rate"),
    (["--speed", "0"], "--speed must be > 0"),
    (["--procs", "2"], "splits by connection"),
])
def test_a_replay_refuses_options_that_do_not_fit(small_recording: Path, args: list[str], words: str) -> None:
    done = run_load_cli("ws://127.0.0.1:9", "--replay", str(small_recording), *args)
    assert done.returncode == 2 and words in done.stderr, done.stderr


def test_load_refuses_what_is_not_a_recording(tmp_path: Path) -> None:
    done = run_load_cli("ws://127.0.0.1:9", "--replay", str(tmp_path))
    assert done.returncode == 2 and "no recording segments" in done.stderr
    done = run_load_cli("ws://127.0.0.1:9", "--rate", "10", "--duration", "1s", "--speed", "2")
    assert done.returncode == 2 and "--speed is for --replay" in done.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["--record-sample", "1.5"], "--record-sample must be a fraction"),
    (["--record-redact", "embedding"], "text or bytes field"),
])
def test_serve_refuses_bad_recording_options(tmp_path: Path, args: list[str], words: str) -> None:
    import subprocess

    done = subprocess.run([*flowrelay_command(), "serve", "--port", "0", "--record", str(tmp_path / "r"), *args],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and words in done.stderr, done.stderr


def test_serve_refuses_to_record_over_a_recording(small_recording: Path) -> None:
    import subprocess

    done = subprocess.run([*flowrelay_command(), "serve", "--port", "0", "--record", str(small_recording)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "already holds a recording" in done.stderr
    done = subprocess.run([*flowrelay_command(), "serve", "--port", "0", "--record-sample", "0.5"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "--record-sample needs --record" in done.stderr
