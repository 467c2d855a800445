"""Bad input found by fuzzing every route: each gets a structured 4xx in the route's shape, never a 500, and the
worker keeps serving. Raw HTTP, because the SDKs cannot send most of these."""

from __future__ import annotations

import gzip
import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.conftest import MASTER_KEY, GatewaySetup
from tests.harness import InProcessWorker
from worker.appkeys import GATEWAY

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class _Resp:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class _Client:
    """Raw HTTP/1.1 to the worker (stdlib): header values may be bytes, bodies anything."""

    def __init__(self, base_url: str, headers: dict[str, Any] | None = None) -> None:
        self.netloc = urlsplit(base_url).netloc
        self.headers = headers or {}

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> _Resp:
        conn = http.client.HTTPConnection(self.netloc, timeout=30)
        try:
            body = content if json_body is None else json.dumps(json_body).encode()
            conn.putrequest(method, path + ("?" + urlencode(params) if params else ""))
            merged = {**self.headers, **(headers or {})}
            if json_body is not None:
                merged.setdefault("Content-Type", "application/json")
            for name, value in merged.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body)
            resp = conn.getresponse()
            return _Resp(resp.status, resp.read().decode())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> _Resp:
        return self.request("GET", path, **kw)

    def post(self, path: str, *, json: Any = None, **kw: Any) -> _Resp:
        return self.request("POST", path, json_body=json, **kw)


def _openai_error(resp: _Resp, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert isinstance(error, dict) and error["message"]
    return error


@pytest.mark.parametrize("model", ["gpt-4o-mini\n", "gpt-4o-mini\r", "gpt\x00", "gpt\x7f", "g" * 300])
def test_a_model_id_that_cannot_be_echoed_in_a_header_is_refused_before_the_upstream(
    gateway: GatewaySetup, model: str
) -> None:
    before = len(gateway.fake.received)
    auth = {"Authorization": f"Bearer {gateway.key}"}
    with _Client(base_url=gateway.worker.url, headers=auth) as client:
        for stream in (False, True):
            resp = client.post("/v1/chat/completions", json={**CHAT, "model": model, "stream": stream})
            assert _openai_error(resp, 400)["param"] == "model"
        fallback = {"routing": {"fallbacks": [{"provider": "openai", "model": model}]}}
        resp = client.post("/v1/chat/completions", json={**CHAT, "trex": fallback})
        assert _openai_error(resp, 400)["param"] == "trex.routing.fallbacks[0].model"
        resp = client.post("/v1/embeddings", json={"model": model, "input": "x"})
        assert _openai_error(resp, 400)["param"] == "model"
        resp = client.post("/v1/messages", json={**CHAT, "model": model, "max_tokens": 5})
        assert resp.status_code == 400 and resp.json()["type"] == "error"
        assert client.get("/health").status_code == 200
    assert len(gateway.fake.received) == before  # nothing was forwarded (or billed)


def test_json_nested_too_deeply_and_a_body_that_is_not_what_its_encoding_says_are_400s(
    gateway: GatewaySetup,
) -> None:
    auth = {"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"}
    deep = b'{"model":"gpt-4o-mini","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with _Client(base_url=gateway.worker.url, headers=auth) as client:
        assert _openai_error(client.post("/v1/chat/completions", content=deep), 400)["code"] == "invalid_json"
        resp = client.post("/v1/chat/completions", content=b"not gzip", headers={"Content-Encoding": "gzip"})
        _openai_error(resp, 400)
        # A body that really is gzip still works.
        packed = gzip.compress(b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}')
        resp = client.post("/v1/chat/completions", content=packed, headers={"Content-Encoding": "gzip"})
        assert resp.status_code == 200, resp.text
        # The message names the coding, not aiohttp's rendering of its exception (`400, message: …`).
        resp = client.post(
            "/v1/chat/completions", content=b"not deflate", headers={"Content-Encoding": "deflate"}
        )
        error = _openai_error(resp, 400)
        assert error["code"] == "invalid_body" and error["message"] == (
            "The request body cannot be decoded as its Content-Encoding (deflate) says."
        )


@pytest.mark.parametrize("coding", ["br", "zstd"])
def test_a_content_coding_the_worker_cannot_decode_is_a_415_in_the_routes_shape(
    gateway: GatewaySetup, coding: str
) -> None:
    """Not a 400 telling the client to install a Python module: the coding is named as unsupported, and the
    ones that are supported are named too."""
    auth = {"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"}
    before = len(gateway.fake.received)
    with _Client(base_url=gateway.worker.url, headers=auth) as client:
        resp = client.post("/v1/chat/completions", json=CHAT, headers={"Content-Encoding": coding})
        error = _openai_error(resp, 415)
        assert error["code"] == "unsupported_content_encoding"
        assert error["message"] == (
            f"Content-Encoding {coding} is not supported: send the body uncompressed, or gzip or deflate encoded."
        )
        resp = client.post(
            "/v1/messages", json={**CHAT, "max_tokens": 5}, headers={"Content-Encoding": coding}
        )
        assert resp.status_code == 415 and resp.json()["type"] == "error"
        assert resp.json()["error"]["message"].startswith(f"Content-Encoding {coding} is not supported")
    with _Client(base_url=gateway.worker.url, headers=auth) as client:
        assert client.get("/health").status_code == 200
    assert len(gateway.fake.received) == before


@pytest.mark.parametrize("header", ["Authorization", "x-api-key"])
def test_credentials_that_are_not_utf8_are_a_401(gateway: GatewaySetup, header: str) -> None:
    raw = b"Bearer \xff\xfe" if header == "Authorization" else b"\xc3\x28"
    with _Client(base_url=gateway.worker.url) as client:
        resp = client.get("/v1/models", headers={header: raw})  # type: ignore[dict-item]
        _openai_error(resp, 401)
        resp = client.post("/v1/messages", json={**CHAT, "max_tokens": 5}, headers={header: raw})  # type: ignore[dict-item]
        assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"


def test_query_numbers_in_other_scripts_and_out_of_range_epochs_are_400s(gateway: GatewaySetup) -> None:
    auth = {"Authorization": f"Bearer {gateway.key}"}
    with _Client(base_url=gateway.worker.url, headers=auth) as client:
        assert _openai_error(client.get("/v1/logs", params={"limit": "²"}), 400)["param"] == "limit"
        far = "99999999999999999999"
        assert _openai_error(client.get("/v1/usage", params={"from": far, "to": far}), 400)["param"] in (
            "from",
            "to",
        )
        assert client.get("/v1/usage", params={"from": str(int(time.time()) - 86400)}).status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "assistant", "tool_calls": 5}, {"role": "user", "content": "hi"}],
            },
        ),
        (
            "/v1/messages",
            {
                "model": "gpt-4o-mini",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "text"}]}],
            },
        ),
    ],
)
def test_malformed_conversation_items_never_crash_the_optimizer(
    gateway: GatewaySetup, path: str, body: dict[str, object]
) -> None:
    auth = {"Authorization": f"Bearer {gateway.key}"}
    with _Client(base_url=gateway.worker.url, headers=auth) as client:
        # Forwarded as it is (the upstream judges it) or refused naming the field: never a crash.
        assert client.post(path, json=body).status_code < 500
        assert client.post("/v1/compress", json=body).status_code < 500


ADMIN = "adm_" + "q" * 40


def test_over_long_ids_are_not_found_and_admin_input_that_would_break_later_requests_is_refused(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN})
    record, token = worker.call(worker.app[GATEWAY].keys.create("k"))
    admin = _Client(worker.url, {"Authorization": f"Bearer {ADMIN}"})
    user = _Client(worker.url, {"Authorization": f"Bearer {token}"})
    long_payload = "tzp_" + "a" * 600
    assert _openai_error(user.get("/v1/payloads/" + long_payload), 404)["code"] == "payload_not_found"
    assert _openai_error(admin.get("/admin/v1/keys/" + "k" * 600), 404)["code"] == "key_not_found"
    assert (
        _openai_error(admin.get("/admin/v1/keys/" + "k" * 600 + "/credits"), 404)["code"] == "key_not_found"
    )
    # A grant a 64-bit micro-dollar counter cannot hold is refused, and the balance is left as it was.
    credits = f"/admin/v1/keys/{record.id}/credits"
    assert admin.post(credits, json={"amount_usd": 5}).status_code == 200
    for amount in (1e13, -1e13, 999_999_999.0):
        assert _openai_error(admin.post(credits, json={"amount_usd": amount}), 400)["param"] == "amount_usd"
    assert admin.post(credits, json={"amount_usd": -1}).json()["balance_usd"] == 4.0
    # A provider key that cannot go out in a header is refused when bound, not on every later request.
    binding = f"/admin/v1/keys/{record.id}/bindings/openai"
    for bad in ("sk-abc\ndef", "sk abc", "sk-\x00", "sk-" + "a" * 5000):
        resp = admin.request("PUT", binding, json_body={"api_key": bad})
        _openai_error(resp, 400)
    assert admin.request("PUT", binding, json_body={"api_key": "sk-good-123"}).status_code == 200
    assert user.post("/v1/chat/completions", json=CHAT).status_code == 200
    ref = {**CHAT, "trex": {"context_ref": [long_payload]}}
    assert _openai_error(user.post("/v1/chat/completions", json=ref), 404)["code"] == "payload_not_found"
