"""Outbound clients and redirects to addresses the guard refuses; the S3 client's guard.

Streaming's HTTP clients (function calls, webhook and chat notifications) never follow a
redirect: the answer counts as a failed call. The S3 client's connection pool resolves
names only through the outbound guard and checks every socket's address before it
connects, so the address checked is the address used, on every hop.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from datamill.connectors.outbound.s3 import OutboundRefused, S3Guard
from datamill.connectors.streams import SINKS, TRANSFORMS
from datamill.connectors.streams.base import StreamContext
from tests.connectors.test_stream_connectors import context, function_basic, log_of
from tests.redirects import REDIRECT_STATUSES, REFUSED_REDIRECT_TARGETS, RedirectServer
from tests.webhdfs_double import ConnectionProbe


def call_function(url: str, ctx: StreamContext) -> str:
    transform = TRANSFORMS["function"]({"url": url}, function_basic(), ctx)
    out = transform.apply(pa.table({"a": [1], "b": [2]}))
    transform.close()
    assert out.column("answer").to_pylist() == [None]
    return f"status {out.column('status').to_pylist()[0]}"


def notify(channel: str) -> Callable[[str, StreamContext], str]:
    def send(url: str, ctx: StreamContext) -> str:
        configs = {"defaultMessage": "m"}
        sink = SINKS["notification"]({"channel": channel, "url": url}, configs, ctx)
        sink.write(pa.table({"n": [1]}), 1)
        sink.close()
        assert (sink.sent, sink.failed) == (0, 1)  # type: ignore[attr-defined]
        assert "redirects are not followed" in log_of(ctx)
        return "failed"

    return send


STREAM_CLIENTS: list[tuple[str, Callable[[str, StreamContext], str]]] = [
    ("function", call_function),
    ("webhook", notify("webhook")),
    ("chat", notify("chat")),
]
"""(client, a call through it to a URL that returns what the caller saw)."""


@pytest.mark.parametrize("status", REDIRECT_STATUSES)
@pytest.mark.parametrize(("host", "bind"), REFUSED_REDIRECT_TARGETS)
@pytest.mark.parametrize(("client", "call"), STREAM_CLIENTS, ids=[c for c, _ in STREAM_CLIENTS])
def test_stream_clients_do_not_follow_a_redirect_to_a_refused_address(
    tmp_path: Path,
    client: str,
    call: Callable[[str, StreamContext], str],
    host: str,
    bind: str,
    status: int,
) -> None:
    with ConnectionProbe(host, bind) as probe, RedirectServer(probe.url("/"), status) as server:
        seen = call(server.url + "/hook", context(tmp_path))
    assert seen == ("failed" if client != "function" else f"status {status}")
    assert server.redirected
    assert probe.connections == 0


def resolve(guard: S3Guard, host: str, port: int = 80) -> list[str]:
    return [found["host"] for found in asyncio.run(guard.resolve(host, port))]


def test_the_s3_guard_resolves_names_only_to_addresses_it_allows() -> None:
    assert resolve(S3Guard(["localhost"], "spec.endpoint"), "localhost")
    guard = S3Guard([], "spec.endpoint")
    with pytest.raises(OutboundRefused) as refused:
        resolve(guard, "localhost")
    assert refused.value.error.field == "spec.endpoint"
    assert guard.refused is refused.value.error
    assert "DATAMILL_OUTBOUND_ALLOW" in guard.refused.message


REFUSED_SOCKET_ADDRESSES: list[tuple[Any, ...]] = [
    (socket.AF_INET, ("127.0.0.2", 80)),
    (socket.AF_INET, ("0.0.0.0", 80)),
    (socket.AF_INET, ("169.254.169.254", 80)),
    (socket.AF_INET6, ("::1", 80, 0, 0)),
    (socket.AF_INET6, ("::ffff:127.0.0.1", 80, 0, 0)),
]
"""Addresses a socket of the S3 client may never connect to (family, socket address)."""


@pytest.mark.parametrize(("family", "address"), REFUSED_SOCKET_ADDRESSES)
def test_the_s3_guard_checks_every_socket_address(family: int, address: tuple[Any, ...]) -> None:
    guard = S3Guard(["127.0.0.1"], "spec.endpoint")
    with pytest.raises(OutboundRefused):
        guard.socket((family, socket.SOCK_STREAM, 6, "", address))
    allowed = guard.socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)))
    allowed.close()


def test_an_address_the_guard_resolved_may_be_connected_to() -> None:
    guard = S3Guard(["localhost"], "spec.endpoint")
    address = resolve(guard, "localhost")[0]
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    guard.socket((family, socket.SOCK_STREAM, 6, "", (address, 80))).close()
    with pytest.raises(OutboundRefused):  # the name was allowed, not every loopback address
        guard.socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", 80)))
