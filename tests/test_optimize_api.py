"""Optimization as a client sees it: savings headers and the forwarded body on proxied requests,
`POST /v1/compress` for the three formats, and `trex compress` on the command line."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import GatewaySetup
from tests.harness import write_config
from tests.optimize.corpus import coding_session, long_document, support_conversation
from tests.optimize.test_pipeline import _strings
from tests.test_cli import trex
from worker import cli, optimizing, tokens
from worker.appkeys import GATEWAY


def test_proxied_request_is_optimized_and_reports_savings(gateway: GatewaySetup) -> None:
    case = coding_session()
    body = copy.deepcopy(case.body)
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model=body["model"],
        messages=body["messages"],
        tools=body["tools"],
        extra_body={"trex": {"optimize": {"mode": "balanced"}}},
        extra_headers={"X-Session-Id": "sess-abc"},
    )
    assert raw.parse().choices[0].message.content
    h = raw.headers
    original, optimized = int(h["X-Trex-Original-Tokens"]), int(h["X-Trex-Optimized-Tokens"])
    assert optimized < original and int(h["X-Trex-Saved-Tokens"]) == original - optimized
    assert float(h["X-Trex-Savings-Percent"]) == pytest.approx(
        100 * (original - optimized) / original, abs=0.01
    )
    assert h["X-Trex-Session-Id"] == "sess-abc"
    forwarded = gateway.fake.last().json
    assert "trex" not in forwarded
    text = _strings(forwarded)
    assert all(f in text for f in case.facts)
    assert forwarded["messages"][-1] == case.body["messages"][-1]
    assert len(json.dumps(forwarded)) < len(json.dumps(case.body))


def test_optimize_off_by_header_forwards_the_messages_unchanged(gateway: GatewaySetup) -> None:
    case = coding_session()
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=case.body["messages"], extra_headers={"X-Trex-Optimize": "off"}
    )
    assert raw.headers["X-Trex-Saved-Tokens"] == "0"
    assert raw.headers["X-Trex-Session-Id"].startswith("sess_")
    assert gateway.fake.last().json["messages"] == case.body["messages"]
    again = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=case.body["messages"], extra_headers={"X-Trex-Optimize": "off"}
    )
    assert again.headers["X-Trex-Session-Id"] != raw.headers["X-Trex-Session-Id"]  # every new session is new


def test_cross_format_request_is_optimized_before_translation(gateway: GatewaySetup) -> None:
    case = coding_session()
    out = gateway.anthropic().messages.with_raw_response.create(
        model="gpt-4o-mini",
        max_tokens=100,
        messages=[
            {"role": "user", "content": case.body["messages"][5]["content"] * 3},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "what does it say?"},
        ],
    )
    assert int(out.headers["X-Trex-Saved-Tokens"]) >= 0
    assert gateway.fake.last().path == "/v1/chat/completions"


def test_bad_optimizer_options_are_400(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"trex": {"optimize": {"mode": "extreme"}}},
        )
    assert err.value.param == "trex.optimize.mode"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Trex-Optimize": "max"},
        )
    assert err.value.param == "X-Trex-Optimize"
    assert gateway.fake.received == []


def _compress(gateway: GatewaySetup, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                gateway.worker.url + "/v1/compress",
                json=payload,
                headers={"Authorization": f"Bearer {gateway.key}", **(headers or {})},
            ) as r,
        ):
            return r.status, await r.json()

    return asyncio.run(go())


@pytest.mark.parametrize("make", [coding_session, support_conversation, long_document])
def test_compress_endpoint_each_format(gateway: GatewaySetup, make: Any) -> None:
    case = make()
    payload = copy.deepcopy(case.body)
    payload["custom_field"] = {"keep": [1, 2, 3]}
    payload["store"] = False  # the payload's own field (OpenAI's; Codex always sends it): kept as it is
    status, doc = _compress(gateway, payload)
    assert status == 200
    c = doc.pop("compression")
    assert set(c) >= {
        "technique",
        "applied_strategies",
        "compression_rate",
        "uncompressed_input_tokens",
        "compressed_input_tokens",
        "compression_time_ms",
    }
    assert c["technique"] == "auto"
    assert c["compressed_input_tokens"] < c["uncompressed_input_tokens"]
    assert c["compression_rate"] == pytest.approx(
        1 - c["compressed_input_tokens"] / c["uncompressed_input_tokens"], abs=1e-3
    )
    for key, value in case.body.items():  # every field the optimizer does not own is untouched
        if key not in ("messages", "input", "system", "tools"):
            assert doc[key] == value
    assert doc["custom_field"] == {"keep": [1, 2, 3]} and doc["store"] is False and "trex_id" not in doc
    text = _strings(doc)
    assert all(f in text for f in case.facts)
    assert gateway.fake.received == []  # no model call


def test_compress_endpoint_errors(gateway: GatewaySetup) -> None:
    status, doc = _compress(gateway, {"model": "gpt-4o-mini", "messages": []})
    assert status == 400 and doc["error"]["param"] == "messages"
    status, doc = _compress(gateway, {"messages": [{"role": "user", "content": "x"}]})
    assert status == 400 and doc["error"]["param"] == "model"
    status, doc = _compress(gateway, {"model": "m", "messages": [{"role": "wizard", "content": "x"}]})
    assert status == 400 and doc["error"]["param"] == "messages[0].role"
    status, doc = _compress(
        gateway, {"model": "m", "messages": [{"role": "user", "content": "x"}], "compression_model": "vim"}
    )
    assert status == 400 and doc["error"]["param"] == "compression_model"
    status, doc = _compress(gateway, [1, 2])
    assert status == 400
    for payload in (
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": "nope"},
        {"model": "m", "input": "x", "tools": "nope"},
    ):
        status, doc = _compress(gateway, payload)
        assert status == 400 and doc["error"]["param"] == "tools"
    status, doc = _compress(
        gateway,
        {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        {"X-Trex-Compression-Model": "codex"},
    )
    assert status == 200
    # A bad profile in the header is named as the header the client sent, not as a body field it did not.
    status, doc = _compress(
        gateway,
        {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        {"X-Trex-Compression-Model": "vim"},
    )
    assert status == 400 and doc["error"]["param"] == "X-Trex-Compression-Model"
    assert doc["error"]["message"].startswith("X-Trex-Compression-Model must be one of")


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": [5, None]}]}, "messages[0].content"),
        ({"model": "m", "system": 5, "messages": [{"role": "user", "content": "x"}]}, "system"),
        ({"model": "m", "system": "s", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m", "input": [5]}, "input[0]"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "compression_model": ""},
            "compression_model",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "compression_model": ["claude"]},
            "compression_model",
        ),
    ],
)
def test_compress_refuses_malformed_content_naming_it(
    gateway: GatewaySetup, payload: Any, param: str
) -> None:
    status, doc = _compress(gateway, payload)
    assert status == 400 and doc["error"]["param"] == param


def test_compress_cli(tmp_path: Path) -> None:
    case = coding_session()
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(case.body))
    out = trex("compress", str(path))
    assert out.returncode == 0, out.stderr
    forwarded = json.loads(out.stdout)
    assert "compression" not in forwarded
    assert all(f in _strings(forwarded) for f in case.facts)
    report = out.stderr.decode()
    assert "format chat, mode balanced" in report and "saved" in report
    js = json.loads(trex("compress", "-", "--json", "--mode", "safe", stdin=path.read_bytes()).stdout)
    assert js["compression"]["mode"] == "safe"
    bad = trex("compress", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and b"cannot read" in bad.stderr
    bad = trex("compress", "-", stdin=b"{nope")
    assert bad.returncode == 2 and b"not valid JSON" in bad.stderr


def test_compress_cli_reports_the_engines_time_not_the_tokenizers_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A process's first count loads the tokenizer (about a quarter of a second): `trex compress` loads it
    before the engine starts, so the time it reports is the engine's own."""
    real, loaded = tokens.encoding, set()

    def slow_first_load(name: str) -> Any:
        if name not in loaded:
            loaded.add(name)
            time.sleep(0.5)  # a load far slower than compressing a one-line payload
        return real(name)

    monkeypatch.setattr(tokens, "encoding", slow_first_load)
    monkeypatch.setattr(tokens, "_preloaded", set())  # as in a new process: nothing loaded yet
    path = tmp_path / "payload.json"
    path.write_text(json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}))
    assert cli.main(["compress", str(path), "--json", "--config", str(write_config(tmp_path, {}))]) == 0
    assert loaded == {"o200k_base"}
    assert json.loads(capsys.readouterr().out)["compression"]["compression_time_ms"] < 500


def test_per_key_default_mode_and_request_override(gateway: GatewaySetup) -> None:
    async def make() -> str:
        _record, token = await gateway.worker.app[GATEWAY].keys.create("quiet", optimize_mode="off")
        return token

    token = gateway.worker.call(make())
    client = gateway.openai(key=token, default_headers={"X-Upstream-Api-Key": "sk-x"})
    case = coding_session()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=case.body["messages"]
    )
    assert raw.headers["X-Trex-Saved-Tokens"] == "0"  # the key's default: off
    assert gateway.fake.last().json["messages"] == case.body["messages"]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=case.body["messages"], extra_headers={"X-Trex-Optimize": "balanced"}
    )
    assert int(raw.headers["X-Trex-Saved-Tokens"]) > 0  # a request overrides its key's default


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/compress"])
def test_a_large_chunked_body_is_optimized_off_the_event_loop(
    gateway: GatewaySetup, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A body sent chunked has no Content-Length; its size as read decides, so a large one is optimized (and
    counted) on a worker thread instead of stalling every other request on the loop."""
    threads: list[str] = []
    real_optimize, real_measure = optimizing.optimize, optimizing.measure

    def spy_optimize(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real_optimize(*args)

    def spy_measure(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real_measure(*args)

    monkeypatch.setattr(optimizing, "optimize", spy_optimize)
    monkeypatch.setattr(optimizing, "measure", spy_measure)
    big = "\n".join(f"line {i}: status=ok value={i * 7}" for i in range(8000))
    body = json.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": big}, {"role": "user", "content": "ok?"}],
        }
    ).encode()
    assert len(body) > 128 * 1024

    async def send() -> int:
        async def chunks() -> Any:
            for i in range(0, len(body), 16384):
                yield body[i : i + 16384]

        headers = {
            "Authorization": f"Bearer {gateway.key}",
            "Content-Type": "application/json",
            "X-Session-Id": "s",
        }
        async with (
            aiohttp.ClientSession() as s,
            s.post(gateway.worker.url + path, data=chunks(), headers=headers) as r,
        ):
            return r.status

    assert asyncio.run(send()) == 200
    loop_thread = gateway.worker.call(_thread_name())
    assert threads and loop_thread not in threads


async def _thread_name() -> str:
    return threading.current_thread().name
