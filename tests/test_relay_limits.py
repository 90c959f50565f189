"""The relay's limits against hostile or careless clients, set with `flowrelay serve` flags.

Each test starts `flowrelay serve` as a process on 127.0.0.1 with one limit set and shows what a client
sees: `--max-message-size` (close 1009 with a reason, after the requests in flight are answered),
`--max-connections` (HTTP 503 at the handshake, counted in /metrics), `--handshake-timeout` (a TCP client
that never completes a handshake is dropped), `--auth-token` (HTTP 401 without it; the Bearer header or
`?token=` let a client in), `--allowed-origins` (HTTP 403 for another Origin), and TLS with
`--certfile/--keyfile` (a wss client that trusts the CA works, one that does not is refused;
`flowrelay load --ca-file` trusts a CA too). After each refusal the relay goes on serving well-behaved
clients. The file-descriptor limit is in test_relay_fd_limit.py.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from load_helpers import cli_summary, run_load_cli
from metrics_helpers import scrape, value
from relay_process import LOOPBACK, exchange, http_get, run_relay
from upstream_helpers import assert_adds_up, bytes_request, json_request, read_answers, relay_status, wait_until
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from relay.wire import proto_codec

TIMEOUT_S = 30.0


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT_S))


async def answered(url: str, mode: str = "json", **connect_options: Any) -> str:
    """One request on a new connection; returns the answer's (upper-cased) text."""
    async with connect(url, subprotocols=[mode], open_timeout=10, **connect_options) as ws:
        await ws.send(bytes_request("r1", "ping") if mode == "bytes" else json_request("ping"))
        (resp,) = await read_answers(ws, 1, mode)
    (doc,) = resp.docs or []
    return doc.text or ""


async def refused(url: str, **connect_options: Any) -> InvalidStatus:
    try:
        async with connect(url, subprotocols=["json"], open_timeout=10, **connect_options):
            pass
    except InvalidStatus as exc:
        return exc
    raise AssertionError(f"the handshake to {url} was accepted")


# ---- --max-message-size ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["json", "bytes"])
def test_oversized_message_closes_1009_after_answering_what_is_in_flight(mode: str) -> None:
    limit = 4096
    if mode == "json":
        slow: list[str | bytes] = [json_request(f"slow {i}", i=i) for i in range(3)]
        big: str | bytes = json_request("x" * (limit + 1))
    else:
        slow = [bytes_request(f"slow-{i}", f"slow {i}") for i in range(3)]
        big = bytes_request("big", "x" * (limit + 1))
    with run_relay("-e", "upper", "-e", "sleep:300ms", "--max-message-size", "4KiB") as relay:
        ex = run(exchange(relay.url, [*slow, big], [mode]))
        assert len(ex.frames) == 3, "the three requests in flight are answered before the close"
        if mode == "bytes":
            ids = sorted(proto_codec.decode_response(f).request_id for f in ex.frames)  # type: ignore[arg-type]
            assert ids == ["slow-0", "slow-1", "slow-2"]
        assert ex.close_code == 1009
        assert "exceeds the limit of 4096" in ex.close_reason
        assert ex.server_closed_first
        assert run(answered(relay.url, mode)) == "PING", "the relay goes on serving"


# ---- --max-connections -------------------------------------------------------------------------------


def test_connections_beyond_the_limit_are_refused_with_503() -> None:
    async def go(url: str, port: int) -> None:
        held: list[ClientConnection] = []
        try:
            for _ in range(2):
                held.append(await connect(url, subprotocols=["json"], open_timeout=10))
            exc = await refused(url)
            assert exc.response.status_code == 503
            assert b"connection limit reached (2)" in (exc.response.body or b"")
            _, samples = await asyncio.to_thread(scrape, port)
            assert value(samples, "flowrelay_relay_connections_refused_total", reason="max_connections") == 1
            # The ones inside are served all the while.
            await held[0].send(json_request("inside"))
            (resp,) = await read_answers(held[0], 1, "json")
            assert [d.text for d in resp.docs or []] == ["INSIDE"]
            await held.pop().close()
            await asyncio.to_thread(
                wait_until, lambda: relay_status(port)["envs"]["connections_open"] == "1", 10, "a free slot"
            )
            assert await answered(url) == "PING", "a slot freed is a slot for a new client"
        finally:
            for ws in held:
                await ws.close()

    with run_relay("--max-connections", "2") as relay:
        run(go(relay.url, relay.port))


# ---- --handshake-timeout -----------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"], ids=["nothing", "half-a-request"])
def test_a_client_that_never_completes_the_handshake_is_dropped(sent: bytes) -> None:
    with run_relay("--handshake-timeout", "1s") as relay, \
            socket.create_connection((LOOPBACK, relay.port), timeout=10) as sock:
        sock.sendall(sent)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # still open, nothing said: the relay is waiting for the handshake
        sock.settimeout(15.0)
        received = b""
        try:
            for _ in range(100):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            pass
        else:
            assert chunk == b"", "the relay closed the connection"
        assert b"101" not in received
        assert relay_status(relay)["envs"]["connections_open"] == "0"
        assert run(answered(relay.url)) == "PING"


# ---- --auth-token ------------------------------------------------------------------------------------


def _get_with_header(port: int, path: str, headers: dict[str, str]) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(f"http://{LOOPBACK}:{port}{path}", headers=headers)
    with opener.open(req, timeout=10) as resp:
        return resp.status


def test_auth_token_is_required_by_header_or_query() -> None:
    with run_relay("--auth-token", "s3cret") as relay:
        for options in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}}):
            exc = run(refused(relay.url, **options))
            assert exc.response.status_code == 401
            assert exc.response.headers.get("WWW-Authenticate") == "Bearer"
        assert run(refused(relay.url + "/?token=wrong")).response.status_code == 401
        assert run(answered(relay.url, additional_headers={"Authorization": "Bearer s3cret"})) == "PING"
        assert run(answered(relay.url + "/?token=s3cret", "bytes")) == "PING"
        # Plain HTTP: the health check stays open, the rest needs the token too.
        assert http_get(relay.port, "/")[0] == 200
        assert http_get(relay.port, "/status")[0] == 401
        assert _get_with_header(relay.port, "/status", {"Authorization": "Bearer s3cret"}) == 200


# ---- --allowed-origins -------------------------------------------------------------------------------


def test_other_origins_are_refused_with_403() -> None:
    with run_relay("--allowed-origins", "https://app.example,https://admin.example") as relay:
        exc = run(refused(relay.url, origin="https://evil.example"))
        assert exc.response.status_code == 403
        assert b"evil.example" in (exc.response.body or b"")
        assert run(answered(relay.url, origin="https://admin.example")) == "PING"
        assert run(answered(relay.url)) == "PING", "a client that sends no Origin is not a browser"


# ---- TLS ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA), made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=flowrelay test",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def test_wss_with_the_ca_works_and_without_it_is_refused(tls_cert: tuple[Path, Path]) -> None:
    cert, key = tls_cert
    with run_relay("--certfile", str(cert), "--keyfile", str(key)) as relay:
        assert "serving wss://" in relay.output()
        url = f"wss://{LOOPBACK}:{relay.port}"
        trusting = ssl.create_default_context(cafile=str(cert))
        assert run(answered(url, "bytes", ssl=trusting)) == "PING"
        with pytest.raises(ssl.SSLCertVerificationError):
            run(answered(url, ssl=ssl.create_default_context()))
        with pytest.raises(Exception):  # noqa: B017 - plain ws:// to a TLS port fails one way or another
            run(answered(relay.url))
        assert run(answered(url, "json", ssl=trusting)) == "PING", "still serving after the failed handshakes"


def test_load_engine_trusts_a_ca_file(tls_cert: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = tls_cert
    with run_relay("--certfile", str(cert), "--keyfile", str(key)) as relay:
        url = f"wss://{LOOPBACK}:{relay.port}"
        common = ("--rate", "50", "--duration", "1s", "--quiet", "--json", "--grace", "5s")
        proc = run_load_cli(url, "--ca-file", str(cert), *common)
        assert proc.returncode == 0, proc.stderr
        summary = cli_summary(proc)
        assert_adds_up(summary)
        assert summary["requests"]["sent"] > 0
        assert summary["requests"]["ok"] == summary["requests"]["sent"]

        untrusted = run_load_cli(url, *common)
        assert untrusted.returncode == 1
        assert "cannot connect" in untrusted.stderr and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr

        missing = run_load_cli(url, "--ca-file", str(tmp_path / "nope.pem"), *common)
        assert missing.returncode == 2 and "nope.pem" in missing.stderr
