"""Run a real Jina 3.34 Flow on loopback for tests and benchmarks.

The Flow lives in its own virtual environment (Jina pins libraries that clash with ours), built by
``scripts/setup_peer.sh`` into a cache outside the repository. This module finds that venv with the same
path rule as the script, starts ``flow_serve.py`` from the shared ``jina-peer`` folder (the only sanctioned
way to start one: it switches off telemetry and public-IP look-ups and binds 127.0.0.1), waits for its
``FLOW READY`` line and stops the whole process tree afterwards.

    with run_flow(protocol='websocket') as flow:
        ...  # talk to flow.url

Fixtures built on this live in ``conftest.py``.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

FLAVOURS = ("legacy", "v2")
MARKER = ".flowrelay-peer-ok"
READY_PREFIX = "FLOW READY"
LOOPBACK = "127.0.0.1"

# flow_serve.py shuts down cleanly on SIGTERM (0.5-2.5 s measured here); past this bound the process group
# is killed outright.
TERM_GRACE_S = 15.0
KILL_GRACE_S = 5.0
OUTPUT_LINES_KEPT = 400

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy", "ftp_proxy")


class PeerMissing(RuntimeError):
    """The Jina peer venv has not been built (run scripts/setup_peer.sh)."""


class FlowStartError(RuntimeError):
    """The Flow died or did not print its READY line in time."""

    def __init__(self, message: str, exited: bool) -> None:
        super().__init__(message)
        self.exited = exited


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    env = os.environ.get("FLOWRELAY_SHARED")
    return Path(env) if env else repo_root().parent / "shared"


def peer_dir() -> Path:
    return shared_dir() / "jina-peer"


def cache_dir() -> Path:
    env = os.environ.get("FLOWRELAY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "flowrelay"


def requirements_file(flavour: str = "legacy") -> Path:
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown peer flavour {flavour!r}, expected one of {FLAVOURS}")
    return peer_dir() / f"requirements-{flavour}.txt"


def peer_venv(flavour: str = "legacy") -> Path | None:
    """Where setup_peer.sh puts the venv for this flavour; None when its requirements file is absent."""
    req = requirements_file(flavour)
    try:
        digest = hashlib.sha256(req.read_bytes()).hexdigest()[:12]
    except FileNotFoundError:
        return None
    return cache_dir() / f"jina-peer-{flavour}-{digest}"


def peer_python(flavour: str = "legacy") -> Path | None:
    """The peer venv's interpreter, or None when the venv is missing or was never finished."""
    venv = peer_venv(flavour)
    if venv is None or not (venv / MARKER).is_file():
        return None
    python = venv / "bin" / "python"
    return python if python.exists() else None


def setup_hint(flavour: str = "legacy") -> str:
    arg = "" if flavour == "legacy" else f" {flavour}"
    where = peer_venv(flavour) or f"(no {requirements_file(flavour)})"
    return f"Jina peer venv ({flavour}) not found at {where}: run scripts/setup_peer.sh{arg}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the usual bind-to-0 race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # The command name is in parentheses and may contain spaces: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


@dataclass(frozen=True)
class TcpSocket:
    state: str  # the kernel's hex state code, "0A" = LISTEN, "01" = ESTABLISHED
    local_host: str
    local_port: int
    remote_host: str
    remote_port: int

    @property
    def listening(self) -> bool:
        return self.state == "0A"


def _decode_host(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    # /proc/net prints each 32-bit word in host (little-endian) order.
    addr = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(addr) == 16 and addr[:12] == b"\x00" * 10 + b"\xff\xff":
        addr = addr[12:]  # IPv4-mapped IPv6, as gRPC binds it
    if len(addr) == 4:
        return ".".join(str(b) for b in addr)
    return ":".join(addr[i : i + 2].hex() for i in range(0, 16, 2))


def tcp_sockets(pids: list[int]) -> list[TcpSocket]:
    """TCP sockets (IPv4 and IPv6) held by ``pids``, read from /proc; IPv4-mapped addresses are unmapped."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[9] not in inodes:
                continue
            (local_addr, local_port), (remote_addr, remote_port) = (c.split(":") for c in cols[1:3])
            found.append(
                TcpSocket(
                    state=cols[3],
                    local_host=_decode_host(local_addr),
                    local_port=int(local_port, 16),
                    remote_host=_decode_host(remote_addr),
                    remote_port=int(remote_port, 16),
                )
            )
    return found


@dataclass
class RunningFlow:
    """A started Flow. ``pid`` is flow_serve.py's, which also leads the process group of its children."""

    port: int
    protocol: str
    flavour: str
    pid: int
    _output: collections.deque[str] = field(repr=False)

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pgid(self) -> int:
        return self.pid

    def pids(self) -> list[int]:
        """The Flow's live processes: flow_serve.py plus its gateway and executor children."""
        return group_pids(self.pgid)

    def listening_ports(self) -> list[int]:
        """TCP ports the Flow listens on: the gateway's and one gRPC port per executor."""
        return sorted({s.local_port for s in tcp_sockets(self.pids()) if s.listening})

    def output_tail(self, lines: int = 40) -> str:
        return "\n".join(list(self._output)[-lines:])


def _flow_env() -> dict[str, str]:
    env = dict(os.environ)
    env["JINA_OPTOUT_TELEMETRY"] = "1"
    env["JINA_DEFAULT_HOST"] = LOOPBACK
    env["PYTHONUNBUFFERED"] = "1"
    # The peer must see only its own venv, never the project's modules or interpreter settings.
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(var, None)
    # gRPC and aiohttp honour proxy variables: gateway-to-executor calls must stay on loopback.
    for var in _PROXY_VARS:
        env.pop(var, None)
        env.pop(var.upper(), None)
    env["no_proxy"] = env["NO_PROXY"] = f"{LOOPBACK},localhost"
    return env


def _pump(stream: IO[str], sink: collections.deque[str], ready: threading.Event, eof: threading.Event) -> None:
    # Runs for the Flow's whole life: the pipe must keep draining or Jina's logging blocks on a full buffer.
    try:
        for line in stream:
            line = line.rstrip("\n")
            sink.append(line)
            if line.startswith(READY_PREFIX):
                ready.set()
    except (OSError, ValueError):
        pass  # pipe closed under us during shutdown
    finally:
        eof.set()


def _exited(pid: int) -> bool:
    """Has ``pid`` (our child) exited? Leaves it unreaped, so its pid and process group stay reserved."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _stop(proc: subprocess.Popen[str]) -> None:
    pgid = proc.pid
    if proc.returncode is None and not _exited(proc.pid):
        # SIGTERM to flow_serve.py alone: it shuts its gateway and executors down in order. Signalling the
        # whole group at once would race the children's own shutdown against the parent's.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_S
        while time.monotonic() < deadline and not _exited(proc.pid):
            time.sleep(0.05)
    # Whatever is left of the group goes, clean shutdown or not. The leader is still unreaped here, so the
    # group id cannot have been handed to an unrelated process.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE_S)
    deadline = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < deadline and group_pids(pgid):
        # The leader is reaped now, so only signal a group that still has members of our Flow in it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.05)


def _close_output(proc: subprocess.Popen[str], pump: threading.Thread) -> None:
    # With the group gone the pipe's write end is closed, so the pump sees EOF. Close our end only after
    # that: closing a stream another thread is blocked reading can hang.
    pump.join(timeout=KILL_GRACE_S)
    if not pump.is_alive() and proc.stdout is not None:
        proc.stdout.close()


def _start_once(
    python: Path, protocol: str, port: int, sleep_ms: float, no_sleeper: bool, flavour: str, timeout_s: float,
    graphql: bool = False,
) -> tuple[subprocess.Popen[str], RunningFlow, threading.Thread]:
    cmd = [
        str(python),
        str(peer_dir() / "flow_serve.py"),
        "--protocol",
        protocol,
        "--port",
        str(port),
        "--sleep-ms",
        str(sleep_ms),
    ]
    if no_sleeper:
        cmd.append("--no-sleeper")
    if graphql:
        cmd.append("--graphql")
    output: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES_KEPT)
    ready, eof = threading.Event(), threading.Event()
    proc = subprocess.Popen(
        cmd,
        cwd=peer_dir(),
        env=_flow_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,  # own process group: the executors it forks can be killed as one
    )
    pump = threading.Thread(target=_pump, args=(proc.stdout, output, ready, eof), daemon=True)
    pump.start()
    flow = RunningFlow(port=port, protocol=protocol, flavour=flavour, pid=proc.pid, _output=output)

    deadline = time.monotonic() + timeout_s
    while not ready.is_set() and not eof.is_set() and time.monotonic() < deadline:
        ready.wait(0.1)
    if ready.is_set():
        return proc, flow, pump

    exited = eof.is_set()
    why = "exited early" if exited else f"printed no {READY_PREFIX!r} line within {timeout_s:g} s"
    _stop(proc)
    _close_output(proc, pump)
    raise FlowStartError(
        f"Jina Flow ({flavour}, {protocol}, port {port}) {why}; exit code {proc.returncode}.\n"
        f"--- last output ---\n{flow.output_tail()}",
        exited=exited,
    )


@contextlib.contextmanager
def run_flow(
    protocol: str = "websocket",
    port: int | None = None,
    sleep_ms: float = 2.0,
    no_sleeper: bool = False,
    flavour: str = "legacy",
    timeout_s: float = 60,
    graphql: bool = False,
) -> Iterator[RunningFlow]:
    """Start ``gateway -> upper [-> sleeper]`` on 127.0.0.1 and stop its whole process group on exit.
    ``graphql``: also serve ``/graphql`` (an ``http`` Flow of the legacy flavour only).

    With ``port=None`` a free port is picked, and the start is retried once on a fresh port if the Flow
    dies before it is ready (another process may have taken the port in between).
    """
    python = peer_python(flavour)
    if python is None:
        raise PeerMissing(setup_hint(flavour))

    def start(chosen: int) -> tuple[subprocess.Popen[str], RunningFlow, threading.Thread]:
        return _start_once(python, protocol, chosen, sleep_ms, no_sleeper, flavour, timeout_s, graphql)

    if port is not None:
        proc, flow, pump = start(port)
    else:
        try:
            proc, flow, pump = start(free_port())
        except FlowStartError as exc:
            if not exc.exited:
                raise  # a hang is not a port clash; retrying would only double the wait
            proc, flow, pump = start(free_port())
    try:
        yield flow
    finally:
        _stop(proc)
        _close_output(proc, pump)


def require_peer(flavour: str = "legacy") -> Path:
    """The peer venv's interpreter for a test. Missing venv: skip locally, fail under CI (env ``CI`` set),
    where it means the install step did not run."""
    import pytest

    python = peer_python(flavour)
    if python is None:
        if os.environ.get("CI"):
            pytest.fail(setup_hint(flavour), pytrace=False)
        pytest.skip(setup_hint(flavour))
    return python


def flow_fixture(flavour: str = "legacy", **kwargs: Any) -> Iterator[RunningFlow]:
    """Body of a pytest fixture: a running Flow, or a skip/fail as in ``require_peer``."""
    require_peer(flavour)
    with run_flow(flavour=flavour, **kwargs) as flow:
        yield flow
