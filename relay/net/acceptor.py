"""The relay's accept loop: listening sockets, and what happens when the process runs out of file descriptors.

Every connection holds a descriptor. At the RLIMIT_NOFILE soft limit `accept()` fails with EMFILE (ENFILE
when the whole machine is out), and the event loops' own accept loops handle that badly:

- asyncio logs "socket.accept() out of system resource" at ERROR on every attempt and stops accepting for
  a second (`ACCEPT_RETRY_DELAY`); the clients wait in the listen backlog and time out, told nothing;
- uvloop relies on libuv's reserve descriptor: libuv closes it, accepts and closes every pending client,
  then reopens it; the clients are cut off, but nothing is logged or counted. When that descriptor cannot
  be reopened, the next EMFILE reaches uvloop's listen callback, which closes the listening socket for good
  (an OSError there is not even logged).

So the relay accepts by itself, the same way on both loops: a reader on each listening socket accepts up to
`ACCEPT_BATCH` clients per readiness and hands each to `loop.connect_accepted_socket`. On EMFILE/ENFILE it
frees a reserved spare descriptor, accepts the waiting client with it, answers HTTP 503 with the reason
(plain TCP only: a TLS client gets the connection closed) and closes it, then takes the spare back; so a
client past the limit is refused at once instead of hanging. Each refusal is reported to `on_refused`
(the server counts it in /metrics) and logged as a warning, at most once per `WARN_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import resource
import socket
import ssl
from collections.abc import Callable

log = logging.getLogger("flowrelay.acceptor")

# Clients accepted per readiness of a listening socket; the rest are taken in the next loop turn, so a burst
# of thousands of handshakes does not hold every other connection's answers back.
ACCEPT_BATCH = 512
# Without a spare descriptor, accepting is paused this long on EMFILE, as asyncio does (else the listening
# socket stays readable and the loop spins).
RETRY_DELAY_S = 1.0
WARN_INTERVAL_S = 10.0
# Clients refused in one EMFILE episode, at most; a backlog longer than this is worked off in the next turn.
MAX_SHED_PER_TURN = 4096
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
# Transient: the machine is short of memory for socket buffers. Pause, as asyncio does, and retry.
_SHORT_OF_MEMORY = (errno.ENOBUFS, errno.ENOMEM)
# Errors of the one connection being accepted (accept(2): Linux passes a new socket's pending network error
# on; EPERM: a firewall rule): that client is gone, the next one may be fine.
_CLIENT_ERRORS = frozenset(
    getattr(errno, name)
    for name in ("ENETDOWN", "EPROTO", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH", "EOPNOTSUPP",
                 "ENETUNREACH", "EPERM")
    if hasattr(errno, name)
)

ProtocolFactory = Callable[[], asyncio.Protocol]


def open_listeners(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address of `host`, as `loop.create_server` makes."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # One socket per family, as asyncio does; a dual-stack IPv6 socket would clash with the IPv4 one.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class SpareFd:
    """One descriptor held in reserve, given up for a moment to accept (and refuse) a client at EMFILE."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self.take()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def take(self) -> bool:
        if self._fd is None:
            with contextlib.suppress(OSError):
                self._fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class RefusalWarning:
    """The out-of-descriptors warning, at most one line per `interval_s`: the first refusal is logged at once,
    later ones are summed up when the interval ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float = WARN_INTERVAL_S) -> None:
        self._loop = loop
        self._interval_s = interval_s
        self._window: asyncio.TimerHandle | None = None
        self._unreported = 0
        self._last_errno = errno.EMFILE

    def refused(self, err: int) -> None:
        self._last_errno = err
        if self._window is None:
            self._log(1)
            self._window = self._loop.call_later(self._interval_s, self._window_ended)
        else:
            self._unreported += 1

    def _window_ended(self) -> None:
        self._window = None
        if self._unreported:
            count, self._unreported = self._unreported, 0
            self._log(count)
            self._window = self._loop.call_later(self._interval_s, self._window_ended)

    def _log(self, count: int) -> None:
        what = "1 connection" if count == 1 else f"{count} connections in the last {self._interval_s:g} s"
        log.warning("refused %s: %s; raise the open-file limit (ulimit -n, LimitNOFILE=) or set --max-connections "
                    "below it", what, describe_fd_shortage(self._last_errno))

    def cancel(self) -> None:
        if self._window is not None:
            self._window.cancel()
            self._window = None


def describe_fd_shortage(err: int) -> str:
    if err == errno.ENFILE:
        return "the system is out of file descriptors (ENFILE, fs.file-max)"
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"out of file descriptors (EMFILE, RLIMIT_NOFILE {soft})"


def refusal_response(err: int) -> bytes:
    """HTTP 503 for a client refused at the descriptor limit; `Connection: close`, as it is closed at once."""
    body = json.dumps({"detail": f"{describe_fd_shortage(err)}; try again later"}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "retry-after: 1\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class Acceptor:
    """Accepts clients on listening sockets and hands them to the event loop as transports of `factory`'s
    protocols; refuses them visibly when the process is out of descriptors."""

    def __init__(
        self,
        sockets: list[socket.socket],
        factory: ProtocolFactory,
        ssl_context: ssl.SSLContext | None,
        on_refused: Callable[[int], None],
    ) -> None:
        self.sockets = sockets
        self._factory = factory
        self._ssl = ssl_context
        self._on_refused = on_refused
        self._loop = asyncio.get_running_loop()
        self._spare = SpareFd()
        self._warning = RefusalWarning(self._loop)
        self._handovers: set[asyncio.Task[object]] = set()
        self._paused: dict[int, asyncio.TimerHandle] = {}
        self._closed = False

    def start(self) -> None:
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets; connections already handed over are not touched."""
        if self._closed:
            return
        self._closed = True
        for handle in self._paused.values():
            handle.cancel()
        self._paused.clear()
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self._spare.release()
        self._warning.cancel()

    # ---- accepting -----------------------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while waiting in the backlog
            except OSError as exc:
                if exc.errno in _CLIENT_ERRORS:
                    continue
                if exc.errno in _OUT_OF_FDS:
                    self._shed(sock, exc.errno)
                elif exc.errno in _SHORT_OF_MEMORY:
                    log.warning("accept() failed (%s); retrying in %g s", exc.strerror, RETRY_DELAY_S)
                    self._pause(sock)
                else:
                    # Unknown: pause rather than spin on a listening socket that stays readable.
                    log.error("accept() failed: %s; retrying in %g s", exc, RETRY_DELAY_S)
                    self._pause(sock)
                return
            self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        coro = self._loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl)
        task: asyncio.Task[object] = self._loop.create_task(coro)  # type: ignore[arg-type]
        self._handovers.add(task)
        task.add_done_callback(self._handed_over)

    def _handed_over(self, task: asyncio.Task[object]) -> None:
        self._handovers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A failed TLS handshake ends here; the loop has closed the socket.
            log.debug("connection setup failed: %r", task.exception())

    # ---- out of descriptors --------------------------------------------------------------------

    def _shed(self, sock: socket.socket, err: int) -> None:
        """Refuse the clients waiting in the backlog, one at a time through the spare descriptor."""
        try:
            for _ in range(MAX_SHED_PER_TURN):
                if not self._spare.take():
                    # Something else took the descriptor freed last time: nothing to refuse with, so the
                    # clients wait in the backlog a little (a pause, else the loop spins on the readable socket).
                    log.warning("%s and no spare descriptor to refuse clients with; accepting again in %g s",
                                describe_fd_shortage(err), RETRY_DELAY_S)
                    self._pause(sock)
                    return
                self._spare.release()
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    return  # nobody else is waiting
                except ConnectionAbortedError:
                    continue
                except OSError as exc:
                    if exc.errno in _CLIENT_ERRORS:
                        continue
                    # ENFILE: another process took the slot the spare freed.
                    if exc.errno not in _OUT_OF_FDS:
                        log.error("accept() failed: %s", exc)
                    self._pause(sock)
                    return
                self._refuse(conn, err)
        finally:
            self._spare.take()  # every accepted client is closed by now: its descriptor is the spare again

    def _refuse(self, conn: socket.socket, err: int) -> None:
        with conn:
            if self._ssl is None:
                # The client's request is usually here already: read it, so that closing sends FIN, not RST
                # (an RST can make the client's kernel drop the answer before it is read).
                conn.setblocking(False)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                with contextlib.suppress(OSError):
                    conn.send(refusal_response(err))  # a fresh socket's send buffer is empty: this never blocks
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_WR)
        self._refused(err)

    def _refused(self, err: int) -> None:
        self._warning.refused(err)
        self._on_refused(err)

    def _pause(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd in self._paused or self._closed:
            return
        self._loop.remove_reader(fd)
        self._paused[fd] = self._loop.call_later(RETRY_DELAY_S, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        self._paused.pop(sock.fileno(), None)
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept, sock)
