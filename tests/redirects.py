"""Hostile redirects: where they point, and a server that answers every request with one.

A client under test is given the :class:`RedirectServer` (on 127.0.0.1, which the test
settings allow-list) as its endpoint; the redirect points at a
:class:`~tests.webhdfs_double.ConnectionProbe` on an address the guard refuses, and the test
checks that the probe got no connection.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

REFUSED_REDIRECT_TARGETS = [
    ("127.0.0.2", "127.0.0.2"),  # loopback, but not the allow-listed 127.0.0.1
    ("0.0.0.0", "127.0.0.1"),  # "this host": reaches loopback listeners
    ("[::1]", "::1"),
]
"""Where a hostile server redirects: (host in the Location URL, address the probe listens
on). None is allow-listed for the test servers (127.0.0.1 and localhost are)."""

REDIRECT_STATUSES = [301, 302, 307, 308]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner.requests.append((self.command, self.path))
        if owner.upstream is not None and not owner.redirect_when(self.command, self.path):
            self._forward(owner.upstream, body)
            return
        owner.redirected.append((self.command, self.path))
        self.send_response(owner.status)
        self.send_header("Location", owner.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _forward(self, upstream: str, body: bytes) -> None:
        """The request as it came (``Host`` included, so signatures still verify), sent to
        ``upstream``; its answer relayed."""
        parts = urlsplit(upstream)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        try:
            connection.putrequest(
                self.command, self.path, skip_host=True, skip_accept_encoding=True
            )
            for name, value in self.headers.items():
                connection.putheader(name, value)
            connection.endheaders(body or None)
            answer = connection.getresponse()
            content = answer.read()
        finally:
            connection.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                self.send_header(name, value)
        length = answer.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: RedirectServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner


def _always(_method: str, _path: str) -> bool:
    return True


class RedirectServer:
    """An HTTP server on 127.0.0.1 that answers requests with ``status`` and a ``Location``
    of ``location``, and records the requests it got (``requests``) and redirected
    (``redirected``).

    With ``upstream`` (a base URL), only requests for which ``redirect_when(method, path)``
    holds are redirected; the others are passed to ``upstream`` as they are, so a real
    server answers them (a hostile endpoint that lists honestly and redirects reads).
    """

    def __init__(
        self,
        location: str,
        status: int = 307,
        upstream: str | None = None,
        redirect_when: Callable[[str, str], bool] = _always,
    ) -> None:
        self.location = location
        self.status = status
        self.upstream = upstream
        self.redirect_when = redirect_when
        self.requests: list[tuple[str, str]] = []
        self.redirected: list[tuple[str, str]] = []
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="redirect-server", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RedirectServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
