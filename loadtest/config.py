"""What a load run is asked to do (`LoadConfig`), and what the target's URL implies: its protocol and codec.

    ws://  wss://     WebSocket, json or bytes subprotocol
    grpc:// grpcs://  the streaming `jina.JinaRPC/Call` (protobuf: the bytes-mode frame)
    http:// https://  `POST /post`, Jina's JSON model (the json-mode frame)

`--subprotocol` is a WebSocket matter; the scheme decides the frames of the others. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from loadtest.models.schedule import ConstantRate, Schedule, Stages
from loadtest.payloads import DocSpec

if TYPE_CHECKING:
    from loadtest.models.replay import ReplaySpec

WEBSOCKET = "websocket"
GRPC = "grpc"
HTTP = "http"

SCHEMES = {"ws": WEBSOCKET, "wss": WEBSOCKET, "grpc": GRPC, "grpcs": GRPC, "http": HTTP, "https": HTTP}


def transport_of(url: str) -> str:
    """`websocket`, `grpc` or `http`, from the URL's scheme. Raises ValueError for any other."""
    scheme = urlsplit(url).scheme.lower()
    try:
        return SCHEMES[scheme]
    except KeyError:
        raise ValueError(
            f"target {url!r}: the scheme must be ws://, wss://, grpc://, grpcs://, http:// or https://"
        ) from None


def codec_mode(transport: str, subprotocol: str) -> str:
    """The frames to build: `bytes` (DataRequestProto) or `json`."""
    if transport == GRPC:
        return "bytes"
    if transport == HTTP:
        return "json"
    return "bytes" if subprotocol == "bytes" else "json"


def subprotocol_offer(transport: str, subprotocol: str) -> str | None:
    """What a WebSocket session offers in its handshake; nothing for the other protocols."""
    if transport != WEBSOCKET or subprotocol == "none":
        return None
    return subprotocol


def usage_problem(transport: str, subprotocol_given: bool, compression: bool, concurrency: int | None,
                  connections: int) -> str | None:
    """Options that do not apply to the target's protocol, as a message for the user (None: fine)."""
    if transport == WEBSOCKET:
        return None
    carries = "protobuf (DataRequestProto)" if transport == GRPC else "JSON (POST /post)"
    if subprotocol_given:
        return f"--subprotocol is for ws:// targets; a {transport}:// target always carries {carries}"
    if compression:
        return f"--compression (permessage-deflate) is for ws:// targets, not {transport}://"
    if transport == HTTP and concurrency and concurrency > connections:
        return (f"over http:// a connection carries one request at a time: --concurrency {concurrency} needs "
                f"--connections >= {concurrency} (got {connections})")
    return None



@dataclass
class LoadConfig:
    """Everything a load run is told. Times in seconds."""

    target: str
    subprotocol: str = "bytes"  # json | bytes | none
    connections: int = 1
    max_inflight: int = 1000
    rate: float | None = None
    stages: list[tuple[float, float]] | None = None
    arrival: str = "even"
    concurrency: int | None = None
    duration_s: float | None = None
    requests: int | None = None
    warmup_s: float = 0.0
    endpoint: str = "/"
    target_executor: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    docs: DocSpec = field(default_factory=DocSpec)
    timeout_s: float = 30.0
    grace_s: float = 10.0
    connect_timeout_s: float = 10.0
    procs: int = 1
    log_requests: Path | None = None
    compression: bool = False
    ca_file: Path | None = None  # a CA certificate (PEM) to trust for wss:// targets
    seed: int = 1
    # Served by the caller's metrics exporter (the engine only feeds it); None: no metrics.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_linger_s: float = 0.0
    # Served by the caller's live dashboard (the engine only hands it rows); None: no dashboard.
    dashboard: tuple[str, int] | None = None
    dashboard_linger_s: float = 0.0
    # An http:// target: this GraphQL query or mutation instead of POST /post (loadtest.sessions.graphql).
    graphql: str | None = None
    # `--replay SOURCE`: the requests, their timing and the sessions come from a recording (open model).
    replay: ReplaySpec | None = None

    @property
    def transport(self) -> str:
        """`websocket`, `grpc` or `http`: the target's scheme decides (loadtest.sessions.kinds)."""
        return transport_of(self.target)

    @property
    def mode(self) -> str:
        """The codec in use: over WebSocket what we offer decides it (a Jina gateway echoes nothing);
        gRPC carries bytes, HTTP json."""
        return codec_mode(self.transport, self.subprotocol)

    @property
    def offer(self) -> str | None:
        return subprotocol_offer(self.transport, self.subprotocol)

    def schedule(self) -> Schedule | None:
        """The whole run's schedule (workers take turns through it); None in the closed model."""
        if self.concurrency:
            return None
        if self.stages:
            return Stages(self.stages, arrival=self.arrival, seed=self.seed, max_requests=self.requests)
        assert self.rate is not None
        return ConstantRate(self.rate, self.duration_s, max_requests=self.requests, arrival=self.arrival,
                            seed=self.seed)

    def target_rps(self) -> float | None:
        if self.replay is not None:
            return self.replay.target_rps
        if self.concurrency:
            return None
        if self.stages:
            total = sum(d for d, _ in self.stages)
            prev, area = 0.0, 0.0
            for d, r in self.stages:
                area += (prev + r) / 2 * d
                prev = r
            return area / total if total else None
        return self.rate
