"""A small threaded HTTP server on its own port, for what the load engine serves while it runs: Prometheus
metrics (loadtest.outputs.prometheus) and the live dashboard (loadtest.outputs.dashboard).

The standard library's `ThreadingHTTPServer`, a thread per request (daemon threads: a browser left open never
keeps the process alive), bound at once (a busy port is reported before any traffic) and without the reverse DNS
lookup `HTTPServer.server_bind` makes for its name. Imports: the standard library only.
"""

from __future__ import annotations

import socket
import socketserver
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
