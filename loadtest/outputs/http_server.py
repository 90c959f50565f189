"""A small threaded HTTP server on its own port, for what the load engine serves while it runs: Prometheus
metrics (loadtest.outputs.prometheus) and the live dashboard (loadtest.outputs.dashboard).

The standard library's `ThreadingHTTPServer`, a thread per request (daemon threads: a browser left open never
keeps the process alive), bound at once (a busy port is reported before any traffic) and without the reverse DNS
lookup `HTTPServer.server_bind` makes for its name. Imports: the standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a DNS lookup that can take seconds); not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


class _Server6(_Server):
    address_family = socket.AF_INET6


def bind_http_server(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A server bound to HOST:PORT (an IPv6 address when HOST has a colon; port 0 picks one); raises OSError."""
    server_class = _Server6 if ":" in host else _Server
    return server_class((host, port), handler)


def url_host(host: str) -> str:
    """HOST as it goes in a URL."""
    return f"[{host}]" if ":" in host else host


class BackgroundHTTPServer:
    """A server bound at once (raises OSError), serving on a daemon thread from `start()` until `close()`;
    `linger()` keeps it serving `linger_s` longer (a scraper, or a browser, may still be reading)."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str,
                 linger_s: float = 0.0) -> None:
        self.linger_s = linger_s
        self.host = host
        self._name = name
        self._httpd = bind_http_server(host, port, handler)
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def origin(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def serving(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None and not self._closed.is_set():
            self._thread = threading.Thread(target=self._httpd.serve_forever, name=self._name, daemon=True)
            self._thread.start()

    def linger(self) -> None:
        if self.linger_s > 0:
            self.start()
            self._closed.wait(self.linger_s)

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5.0)
            self._thread = None
        with contextlib.suppress(OSError):
            self._httpd.server_close()
