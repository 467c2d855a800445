"""The Redis proxy of the KV outage tests (tests/fakes/redis_proxy.py) leaves no connection open behind it."""

from __future__ import annotations

import socket

from tests.fakes.redis_proxy import RedisProxy
from tests.harness import free_port


def test_a_client_is_hung_up_on_when_redis_cannot_be_reached() -> None:
    """The connection the proxy accepted is closed, not left open (until garbage collection finds it, and its
    `ResourceWarning` fails whichever test runs then)."""
    proxy = RedisProxy(target=("127.0.0.1", free_port())).start()  # nothing listens there
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
            client.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert client.recv(100) == b""  # closed, nothing answered
    finally:
        proxy.stop()
