"""Proxy keys and provider bindings from the command line, used by a real `trex dev` process."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.harness import WorkerProcess, write_config
from tests.test_cli import trex

MESSAGES = [{"role": "user", "content": "hello"}]


def _create_key(cfg: str, name: str = "app") -> dict[str, str]:
    out = trex("keys", "create", "--config", cfg, "--name", name, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_master_key_generated_once_and_bindings_survive_restart(
    tmp_path: Path, fake_upstream: FakeUpstream, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    cfg = str(write_config(tmp_path, fake_upstream.base_urls()))
    dev_vars = tmp_path / ".dev.vars"
    dev_vars.write_text("OTHER_SECRET=keep-me")  # existing file without a trailing newline
    created = _create_key(cfg)
    assert created["key"].startswith("trex_") and created["id"].startswith("key_")

    bound = trex(
        "keys", "bind", created["id"], "--provider", "openai", "--config", cfg, stdin=b"sk-bound-openai-1\n"
    )
    assert bound.returncode == 0, bound.stderr
    assert b"generated a new TREX_MASTER_KEY" in bound.stderr
    text = dev_vars.read_text()
    assert text.startswith("OTHER_SECRET=keep-me\nTREX_MASTER_KEY=")  # appended, never overwritten
    assert oct(dev_vars.stat().st_mode & 0o777) in ("0o600", "0o644")

    again = trex(
        "keys", "bind", created["id"], "--provider", "anthropic", "--config", cfg, stdin=b"sk-ant-2\n"
    )
    assert again.returncode == 0 and b"generated" not in again.stderr
    assert dev_vars.read_text() == text  # the same key, reused

    # Nothing secret is stored in clear text in the KV.
    db = (tmp_path / "state" / "kv.sqlite3").read_bytes()
    assert b"sk-bound-openai-1" not in db and created["key"].encode() not in db

    listed = json.loads(trex("keys", "list", "--config", cfg, "--json").stdout)["keys"]
    assert [(k["id"], k["name"], k["state"], k["last_used"]) for k in listed] == [
        (created["id"], "app", "active", None)
    ]
    assert created["key"].startswith(listed[0]["prefix"])

    for _ in range(2):  # the second round runs on a restarted server: the SQLite state persisted
        wp = spawn_worker(Path(cfg))
        with openai.OpenAI(api_key=created["key"], base_url=wp.url + "/v1", max_retries=0) as client:
            out = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert out.choices[0].message.content
        assert fake_upstream.last().headers["Authorization"] == "Bearer sk-bound-openai-1"
        assert wp.stop() == 0
    listed = json.loads(trex("keys", "list", "--config", cfg, "--json").stdout)["keys"]
    assert isinstance(listed[0]["last_used"], int)


def test_wrong_master_key_is_a_clear_error(
    tmp_path: Path, fake_upstream: FakeUpstream, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    cfg = str(write_config(tmp_path, fake_upstream.base_urls(), dev_vars={"TREX_MASTER_KEY": "a" * 40}))
    created = _create_key(cfg)
    assert (
        trex(
            "keys", "bind", created["id"], "--provider", "openai", "--config", cfg, stdin=b"sk-x\n"
        ).returncode
        == 0
    )
    (tmp_path / ".dev.vars").write_text("TREX_MASTER_KEY=" + "b" * 40 + "\n")
    wp = spawn_worker(Path(cfg))
    with (
        openai.OpenAI(api_key=created["key"], base_url=wp.url + "/v1", max_retries=0) as client,
        pytest.raises(openai.InternalServerError) as err,
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert err.value.code == "master_key_error"
    assert "different TREX_MASTER_KEY" in err.value.message
    assert fake_upstream.received == []
    short = trex(
        "keys",
        "bind",
        created["id"],
        "--provider",
        "openai",
        "--config",
        cfg,
        stdin=b"k\n",
        env={"TREX_MASTER_KEY": "short"},
    )
    assert short.returncode == 2 and b"at least 32 characters" in short.stderr


def test_keys_errors(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, {}, dev_vars={"TREX_MASTER_KEY": "m" * 40}))
    missing = trex("keys", "bind", "key_nope", "--provider", "openai", "--config", cfg, stdin=b"sk\n")
    assert missing.returncode == 1 and b"No proxy key with id 'key_nope'" in missing.stderr
    created = _create_key(cfg)
    empty = trex("keys", "bind", created["id"], "--provider", "openai", "--config", cfg, stdin=b"\n")
    assert empty.returncode == 2 and b"no provider key on stdin" in empty.stderr
    bad_provider = trex("keys", "bind", created["id"], "--provider", "azure", "--config", cfg, stdin=b"x\n")
    assert bad_provider.returncode == 2


def test_sigterm_lets_an_in_flight_stream_finish(
    tmp_path: Path, fake_upstream: FakeUpstream, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    cfg = str(write_config(tmp_path, fake_upstream.base_urls(), dev_vars={"TREX_MASTER_KEY": "m" * 40}))
    created = _create_key(cfg)
    fake_upstream.set("/v1/chat/completions", Reply.stream("openai/chat_text.sse", chunk_delay=0.1))
    wp = spawn_worker(Path(cfg))
    started = threading.Event()
    result: dict[str, object] = {}

    def client() -> None:
        with openai.OpenAI(api_key=created["key"], base_url=wp.url + "/v1", max_retries=0) as c:
            stream = c.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                extra_headers={"X-Upstream-Api-Key": "sk-1"},
            )
            parts = []
            for chunk in stream:
                started.set()
                parts.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
            result["text"] = "".join(parts)

    t = threading.Thread(target=client)
    t.start()
    assert started.wait(10)
    wp.signal(signal.SIGTERM)  # mid-stream
    t.join(20)
    assert wp.wait() == 0
    assert result.get("text")  # the client got the whole stream, not a cut
    assert fake_upstream.streams_completed == 1


def test_key_states_from_the_cli_reach_a_running_worker_within_a_second(
    tmp_path: Path, fake_upstream: FakeUpstream, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    cfg = str(
        write_config(tmp_path, fake_upstream.base_urls(), extra="[plans.pro]\nmonthly_price_usd = 20\n")
    )
    created = _create_key(cfg)
    wp = spawn_worker(Path(cfg))
    headers = {"X-Upstream-Api-Key": "sk-x"}
    with openai.OpenAI(
        api_key=created["key"], base_url=wp.url + "/v1", max_retries=0, default_headers=headers
    ) as client:

        def status_code() -> tuple[int, str | None]:
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            except openai.APIStatusError as err:
                return err.status_code, err.code
            return 200, None

        def settles_to(expected: tuple[int, str | None]) -> bool:
            deadline = time.monotonic() + 1.5  # the worker caches a key for at most 1 s
            while time.monotonic() < deadline:
                if status_code() == expected:
                    return True
                time.sleep(0.05)
            return False

        assert status_code() == (200, None)
        for action, expected in [
            ("suspend", (401, "key_suspended")),
            ("activate", (200, None)),
            ("revoke", (401, "key_revoked")),
        ]:
            out = trex("keys", action, created["id"], "--config", cfg, "--json")
            assert out.returncode == 0, out.stderr
            assert settles_to(expected), action
    again = trex("keys", "activate", created["id"], "--config", cfg)
    assert again.returncode == 1 and b"revoked" in again.stderr  # revocation is final
    assert trex("keys", "suspend", "key_missing", "--config", cfg).returncode == 1
    plan = trex("keys", "set-plan", created["id"], "pro", "--config", cfg, "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["plan"] == "pro"
    assert trex("keys", "set-plan", created["id"], "gold", "--config", cfg).returncode == 2
    # Nor can a key be created on a plan the config does not have (a typo would give an unrestricted key).
    typo = trex("keys", "create", "--name", "t", "--plan", "por", "--config", cfg, "--json")
    assert typo.returncode == 2 and b"no [plans.por]" in typo.stderr and typo.stdout == b""
    listed = json.loads(trex("keys", "list", "--config", cfg, "--json").stdout)["keys"]
    assert (listed[0]["state"], listed[0]["plan"]) == ("revoked", "pro")
    assert wp.stop() == 0
