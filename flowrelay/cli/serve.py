"""The `flowrelay serve` verb: flags -> a RelayConfig and a backend (built-in Executors or an upstream Flow)
-> the relay's pieces wired together (`build_relay`) -> a running relay, until SIGTERM or SIGINT.

Usage errors exit 2 with a message, before anything listens; a port that cannot be bound exits 1, and so does a
relay whose background task failed (keepalive, gc freezer, the upstream links' upkeep), with the error named.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskStatus

from relay.backend import Backend
from relay.capture.format import LATENCY_GATEWAY
from relay.capture.redact import RedactError, Redactor, parse_fields
from relay.capture.tap import CaptureTap
from relay.capture.writer import RecordingExists, RecordingWriter, SegmentWriter
from relay.common import loop as event_loop
from relay.common.loop import TaskFailed, leaf_exceptions
from relay.common.units import parse_duration, parse_size
from relay.config import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PING_INTERVAL_S,
    DEFAULT_PORT,
    DEFAULT_PREFETCH,
    RelayConfig,
)
from relay.dashboard import RelayDashboard
from relay.doors.http import ExtraRoute, HttpDoor
from relay.doors.websocket import WebSocketDoor
from relay.executors import Chain, ExecutorSpecError
from relay.gateway import Gateway
from relay.metrics import RelayMetrics
from relay.observer import Observer
from relay.server import RelayServer
from relay.upstream.backend import UpstreamBackend
from relay.upstream.pool import UpstreamConfig, UpstreamPool

EXIT_USAGE = 2
EXIT_FAILED = 1

log = logging.getLogger("flowrelay.relay")

def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument(
        "--executor",
        "-e",
        action="append",
        default=None,
        metavar="[NAME=]KIND[:ARG...]",
        help="a built-in Executor, in chain order (repeatable): echo, upper, sleep:2ms, "
        "sleep:exponential:5ms, sleep:lognormal:5ms:sigma=0.5, fail:0.1, fail:/fail, embed:128, "
        "record:PATH (every document id into a SQLite file, durably, counting repeats). "
        "Default: upper",
    )
    p.add_argument(
        "--prefetch",
        type=int,
        default=DEFAULT_PREFETCH,
        help=f"requests in flight per connection before reading pauses (default {DEFAULT_PREFETCH}; 0 = no limit)",
    )
    p.add_argument(
        "--max-message-size",
        default=str(DEFAULT_MAX_MESSAGE_SIZE),
        metavar="SIZE",
        help="largest request accepted, e.g. 64MiB (default); larger ones are closed with 1009",
    )
    p.add_argument(
        "--drain-timeout", default="10s", help="on SIGTERM, how long to answer requests in flight (default 10s)"
    )
    p.add_argument(
        "--cors", action="store_true", help="answer CORS preflights and allow any origin on the HTTP door (off)"
    )
    p.add_argument("--compression", action="store_true", help="accept permessage-deflate (off: it costs throughput)")
    p.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="scan every session in Python's full garbage collections (default: long-lived objects are frozen "
        "with gc.freeze, so that thousands of idle sessions do not pause the relay)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=0,
        help="refuse WebSocket handshakes beyond this many connections with HTTP 503 (default 0: no limit)",
    )
    p.add_argument("--handshake-timeout", default="10s", help="close a connection whose handshake takes longer")
    p.add_argument(
        "--ping-interval",
        default=f"{DEFAULT_PING_INTERVAL_S:g}s",
        help=f"keepalive: ping each WebSocket client this often; one that did not answer the previous ping is "
        f"closed 1011 (default {DEFAULT_PING_INTERVAL_S:g}s; 0: no pings)",
    )
    p.add_argument(
        "--auth-token",
        help="require 'Authorization: Bearer TOKEN' (or ?token=TOKEN for browsers), else HTTP 401; "
        "also read from FLOWRELAY_AUTH_TOKEN",
    )
    p.add_argument("--allowed-origins", help="comma-separated Origin values a browser may connect from (403 otherwise)")
    p.add_argument("--certfile", help="serve wss:// with this TLS certificate (PEM)")
    p.add_argument("--keyfile", help="the certificate's private key (PEM)")
    p.add_argument(
        "--upstream",
        metavar="URL",
        help="relay to a real Flow at ws://HOST:PORT or grpc://HOST:PORT (a gRPC gateway, Jina's default) "
        "instead of serving built-in Executors",
    )
    p.add_argument(
        "--upstream-subprotocol",
        choices=["bytes", "json"],
        default="bytes",
        help="what to speak to a ws:// upstream Flow (default bytes: docarray >= 0.30 gateways speak only that); "
        "a grpc:// upstream always gets protobuf",
    )
    p.add_argument(
        "--upstream-docarray",
        choices=["v1", "v2"],
        default="v1",
        help="the upstream Flow's documents: v1 = docarray < 0.30 (default), v2 = docarray >= 0.30 "
        "(DocProto maps, TextDoc fields; its gateway speaks only bytes). Clients speak v1 to the relay either way",
    )
    p.add_argument(
        "--upstream-connections",
        type=int,
        default=2,
        help="persistent sessions to the upstream Flow, shared by all clients (default 2)",
    )
    p.add_argument(
        "--upstream-timeout",
        default="60s",
        help="an upstream answer not back in this time fails its request (default 60s)",
    )
    p.add_argument(
        "--mirror",
        metavar="URL",
        help="also send a copy of each request to this shadow Flow; its answers are measured, not returned",
    )
    p.add_argument(
        "--grpc-port",
        type=int,
        metavar="P",
        help="also serve Jina's gRPC gateway services (JinaRPC/Call, process_single_data, dry_run, _status, "
        "endpoint_discovery, health) on port P of --host, over the same Executors or upstream (0 picks a free one)",
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    add_record_arguments(p)


def add_record_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("recording (replay it with flowrelay load URL --replay DIR)")
    g.add_argument(
        "--record",
        metavar="DIR",
        type=Path,
        help="record every request the relay receives (WebSocket, HTTP and gRPC doors) with its arrival time, "
        "connection, endpoint and body, and each answer as sent (status, latency, routes), into a new folder DIR",
    )
    g.add_argument(
        "--record-max-size",
        default="64MiB",
        metavar="SIZE",
        help="start a new segment file once the current one holds this much, compressed (default 64MiB)",
    )
    g.add_argument(
        "--record-max-age",
        default="10m",
        metavar="DURATION",
        help="start a new segment file once the current one is this old (default 10m)",
    )
    g.add_argument(
        "--record-sample",
        type=float,
        default=1.0,
        metavar="FRACTION",
        help="record this fraction of connections, whole (default 1: all), e.g. 0.1",
    )
    g.add_argument(
        "--record-redact",
        metavar="FIELDS",
        help="replace these document fields by a keyed hash of the same length, e.g. tags.email,text "
        "(also parameters.KEY)",
    )


def _check_ws_url(url: str, flag: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "grpc", "grpcs") or not parts.hostname or not parts.port:
        raise ValueError(f"{flag} {url!r}: expected ws://HOST:PORT or grpc://HOST:PORT")
    return url


def backend_from_args(args: argparse.Namespace, observer: Observer | None = None) -> Backend:
    """The embedded Executors, or the link to an upstream Flow (with its mirror, whose figures go to
    `observer`)."""
    if args.upstream is None:
        if args.mirror:
            raise ValueError("--mirror needs --upstream: it copies the traffic a relay forwards")
        return Chain.from_specs(args.executor or ["upper"])
    if args.executor:
        raise ValueError("choose --executor (built-in Executors) or --upstream (a real Flow), not both")
    if args.upstream_connections < 1:
        raise ValueError("--upstream-connections must be >= 1")
    if args.upstream_docarray == "v2" and args.upstream_subprotocol == "json":
        raise ValueError("--upstream-docarray v2 needs --upstream-subprotocol bytes: docarray >= 0.30 gateways "
                         "speak nothing else")
    timeout_s = parse_duration(args.upstream_timeout)
    max_size = parse_size(args.max_message_size) * 4 or None

    def pool(url: str) -> UpstreamPool:
        cfg = UpstreamConfig(
            url=url,
            subprotocol=args.upstream_subprotocol,
            docarray=args.upstream_docarray,
            connections=args.upstream_connections,
            max_inflight=args.prefetch or 1000,
            request_timeout_s=timeout_s,
            max_message_size=max_size,
        )
        if urlsplit(url).scheme in ("grpc", "grpcs"):  # the URL's scheme picks the link kind
            if args.upstream_subprotocol == "json":
                raise ValueError("--upstream-subprotocol json is for ws:// upstreams: gRPC carries protobuf")
            from relay.upstream.grpc import GrpcUpstreamPool

            return GrpcUpstreamPool(cfg)
        return UpstreamPool(cfg)

    mirror = pool(_check_ws_url(args.mirror, "--mirror")) if args.mirror else None
    return UpstreamBackend(pool(_check_ws_url(args.upstream, "--upstream")), mirror, observer)


def config_from_args(args: argparse.Namespace, observer: Observer | None = None) -> tuple[RelayConfig, Backend]:
    """Build the relay's configuration and backend; raises ValueError with a user-facing message when wrong."""
    if args.prefetch < 0:
        raise ValueError("--prefetch must be 0 (no limit) or a positive number")
    if not 0 <= args.port <= 65535:
        raise ValueError("--port must be between 0 and 65535")
    ping_interval_s = parse_duration(args.ping_interval)
    backend = backend_from_args(args, observer)
    config = RelayConfig(
        host=args.host,
        port=args.port,
        prefetch=args.prefetch,
        max_message_size=parse_size(args.max_message_size),
        drain_timeout_s=parse_duration(args.drain_timeout),
        compression=args.compression,
        cors=args.cors,
        max_connections=args.max_connections,
        handshake_timeout_s=parse_duration(args.handshake_timeout),
        ping_interval_s=ping_interval_s or None,
        auth_token=args.auth_token or os.environ.get("FLOWRELAY_AUTH_TOKEN") or None,
        allowed_origins=tuple(o.strip() for o in (args.allowed_origins or "").split(",") if o.strip()),
        certfile=args.certfile,
        keyfile=args.keyfile,
        gc_freeze=not args.no_gc_freeze,
    )
    if args.max_connections < 0:
        raise ValueError("--max-connections must be >= 0")
    if args.grpc_port is not None and not 0 <= args.grpc_port <= 65535:
        raise ValueError("--grpc-port must be between 0 and 65535")
    if args.keyfile and not args.certfile:
        raise ValueError("--keyfile needs --certfile")
    for path in (args.certfile, args.keyfile):
        if path and not os.path.isfile(path):
            raise ValueError(f"no such file: {path}")
    return config, backend


def capture_from_args(args: argparse.Namespace) -> CaptureTap | None:
    """The recorder `--record` asks for (its folder not yet created), or None; raises ValueError."""
    if args.record is None:
        for flag, given in (("--record-sample", args.record_sample != 1.0), ("--record-redact", args.record_redact)):
            if given:
                raise ValueError(f"{flag} needs --record DIR")
        return None
    if not 0.0 < args.record_sample <= 1.0:
        raise ValueError(f"--record-sample must be a fraction in (0, 1], got {args.record_sample:g}")
    try:
        redactor = Redactor(parse_fields(args.record_redact)) if args.record_redact else None
    except RedactError as exc:
        raise ValueError(str(exc)) from None
    max_size = parse_size(args.record_max_size)
    max_age_s = parse_duration(args.record_max_age)
    if args.record.exists() and not args.record.is_dir():
        raise ValueError(f"--record {args.record}: not a folder")
    meta = {"recorded_by": "flowrelay serve", "latency": LATENCY_GATEWAY, "sample": args.record_sample}
    segments = SegmentWriter(args.record, meta, max_size, max_age_s, redactor)
    return CaptureTap(RecordingWriter(segments), args.record_sample)


def build_relay(config: RelayConfig, backend: Backend, metrics: RelayMetrics | None = None,
                grpc_port: int | None = None, capture: CaptureTap | None = None) -> RelayServer:
    """The relay's pieces, wired: one gateway over `backend` (counting into `metrics`, served at /metrics;
    recording through `capture`), the WebSocket and HTTP doors on the relay's port, the gRPC door on `grpc_port`
    if given, and the server that runs them."""
    gateway = Gateway(config, backend, metrics)
    gateway.capture = capture
    extra_routes: dict[str, ExtraRoute] = {}
    services = {}
    dashboard = None
    if metrics is not None:
        extra_routes["/metrics"] = metrics.http_handler
        # /dashboard and /dashboard/events: read from the metrics once a second, nothing per request.
        dashboard = RelayDashboard(gateway, metrics)
        extra_routes.update(dashboard.routes())
        services["dashboard"] = dashboard.run
    grpc = None
    if grpc_port is not None:
        from relay.doors.grpc import GrpcDoor  # grpc is imported only where a gRPC door is asked for

        grpc = GrpcDoor(gateway, grpc_port)
    relay = RelayServer(config, gateway, WebSocketDoor(gateway), HttpDoor(gateway, extra_routes), grpc, services)
    if dashboard is not None:
        dashboard.where = lambda: f"{config.host}:{relay.port}"
    return relay


async def _serve(relay: RelayServer) -> int:
    """Run `relay` until SIGTERM or SIGINT (then drain); the exit code."""
    config = relay.config
    failed: list[str] = []
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_stop_on_signals, relay)
            await tasks.start(_serve_then_cancel, relay, tasks.cancel_scope)
            scheme = "wss" if config.certfile else "ws"
            print(f"flowrelay serving {scheme}://{config.host}:{relay.port}/ {relay.gateway.backend.describe()}",
                  flush=True)
            if relay.grpc is not None:
                print(f"flowrelay serving grpc{'s' if config.certfile else ''}://{config.host}:{relay.grpc.port}/ "
                      "(gRPC door: jina.JinaRPC/Call and the gateway's other services)", flush=True)
    except* OSError as group:
        failed += [f"cannot listen on {config.host}:{config.port}: {exc}" for exc in leaf_exceptions(group)]
    except* TaskFailed as group:
        for exc in leaf_exceptions(group):
            log.error("%s; the relay stopped", exc, exc_info=exc.__cause__)
            failed.append(str(exc))
    for line in failed:
        print(f"flowrelay serve: {line}", file=sys.stderr, flush=True)
    return EXIT_FAILED if failed else 0


async def _serve_then_cancel(relay: RelayServer, scope: anyio.CancelScope, *,
                             task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    await relay.serve(task_status=task_status)
    scope.cancel()  # the relay has stopped: so does the signal watcher


async def _stop_on_signals(relay: RelayServer) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            print("flowrelay stopping: draining requests in flight", flush=True)
            relay.stop()


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # websockets logs every connection at INFO; a load test opens many.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLogger().level))
    # Always on: the hooks add ~0.6 µs per request (bench/metrics_cost.py), ~2 % of the relay's CPU.
    metrics = RelayMetrics()
    try:
        config, backend = config_from_args(args, metrics)
        capture = capture_from_args(args)
        if capture is not None:
            capture.writer.start()
    except (ValueError, ExecutorSpecError, RecordingExists) as exc:
        print(f"flowrelay serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"flowrelay serve: cannot record into {args.record}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if capture is not None:
        print(f"flowrelay recording into {args.record}/", flush=True)
    try:
        return event_loop.run(_serve, build_relay(config, backend, metrics, args.grpc_port, capture))
    finally:
        if capture is not None:
            # After the drain: the answers of the requests that were in flight are in the recording too.
            capture.close()


def register(sub: Any) -> dict[str, Any]:
    """Add `serve` to the `flowrelay` command."""
    p = sub.add_parser(
        "serve",
        help="run the relay with built-in Executors",
        description="Run a WebSocket gateway that speaks Jina's protocol, with built-in Executors.",
    )
    add_serve_arguments(p)
    return {"serve": run_serve}
