"""tests/socket_guard.py fails the test that leaves a socket open, at its own teardown, and only that test."""

from __future__ import annotations

import pytest

from tests.harness import ROOT

LEAKS = """
import socket

import openai
import pytest

from tests.fakes.threaded import ThreadedServer
from aiohttp import web

KEPT = []


@pytest.fixture
def server():
    async def models(request):
        return web.json_response({"object": "list", "data": []})

    async def app():
        a = web.Application()
        a.router.add_get("/v1/models", models)
        return a

    s = ThreadedServer(app).start()
    yield s
    s.stop()


def test_an_sdk_client_left_open(server):
    client = openai.OpenAI(api_key="k", base_url=server.url + "/v1", max_retries=0)
    client.models.list()
    KEPT.append(client)  # garbage collection would close it some time later, in some other test


def test_an_sdk_client_closed(server):
    with openai.OpenAI(api_key="k", base_url=server.url + "/v1", max_retries=0) as client:
        client.models.list()


def test_a_raw_connection_left_open(server):
    KEPT.append(socket.create_connection(("127.0.0.1", server.port)))


def test_nothing_opened():
    pass
"""


def test_the_test_that_leaves_a_socket_open_fails_at_its_teardown(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    # The guard alone, without this suite's other plugins.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_leaks=LEAKS)
    result = pytester.runpytest_subprocess(
        "-p", "tests.socket_guard", "-p", "no:cacheprovider", "-W", "error"
    )
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_an_sdk_client_left_open*",
            "the test left 1 socket(s) open after its teardown:",
            "*<socket.socket fd=*raddr=('127.0.0.1', *)>",
            "*ERROR at teardown of test_a_raw_connection_left_open*",
        ]
    )
    assert "test_an_sdk_client_closed" not in result.stdout.str().split("short test summary")[-1]
