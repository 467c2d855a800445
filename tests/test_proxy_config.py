"""Configuration that shapes proxying: `[[models]]` entries and the upstream timeouts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from kv.memory import MemoryKV
from tests.conftest import MASTER_KEY
from tests.fakes.upstream import FakeUpstream, Reply
from tests.harness import InProcessWorker, load_test_config, write_config
from worker.appkeys import GATEWAY
from worker.config import ConfigError
from worker.gateway import build_gateway
from worker.routing import parse_model_table

MODELS = """
[[models]]
name = "fast"
provider = "anthropic"
upstream_model = "claude-haiku-4-5"

[[models]]
name = "gpt-4o-mini"
provider = "local"
upstream_model = "qwen3:8b"
"""


def _client(w: InProcessWorker) -> openai.OpenAI:
    _record, token = w.call(w.app[GATEWAY].keys.create("t"))
    return openai.OpenAI(
        api_key=token, base_url=w.url + "/v1", max_retries=0, default_headers={"X-Upstream-Api-Key": "sk-x"}
    )


def test_models_table_adds_and_overrides(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    w = make_worker(extra=MODELS, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    with _client(w) as client:
        out = client.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": "hi"}]
        )
        assert out.headers["X-Trex-Upstream-Provider"] == "anthropic"
        assert out.headers["X-Trex-Upstream-Model"] == "claude-haiku-4-5"
        assert fake_upstream.last().path == "/v1/messages"
        assert fake_upstream.last().json["model"] == "claude-haiku-4-5"
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert fake_upstream.last().path == "/local/v1/chat/completions"  # the built-in rule was overridden
        assert fake_upstream.last().json["model"] == "qwen3:8b"
        listed = {m.id: m for m in client.models.list()}
        assert listed["fast"].owned_by == "anthropic"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('[[models]]\nprovider = "openai"\n', "models[0].name"),
        ('[[models]]\nname = "x"\nprovider = "azure"\n', "models[0].provider"),
        ('[[models]]\nname = "x"\nprovider = "openai"\nupstream_model = 3\n', "models[0].upstream_model"),
    ],
)
def test_bad_models_table_is_a_config_error(tmp_path: Path, table: str, key: str) -> None:
    config = load_test_config(write_config(tmp_path, {}, extra=table))
    with pytest.raises(ConfigError) as err:
        build_gateway(config, None)  # type: ignore[arg-type]
    assert err.value.key == key


def test_first_byte_timeout_is_504(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    w = make_worker(variables={"UPSTREAM_FIRST_BYTE_TIMEOUT": 0.3}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    fake_upstream.set("/v1/chat/completions", Reply.json("openai/chat_text.json", latency=2))
    with _client(w) as client, pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 504 and err.value.code == "upstream_timeout"
    assert "did not respond within 0.3s" in err.value.message


def test_the_total_timeout_is_named_when_it_is_the_one_that_fired(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    w = make_worker(
        variables={"UPSTREAM_FIRST_BYTE_TIMEOUT": 5, "UPSTREAM_TOTAL_TIMEOUT": 0.3},
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
    )
    fake_upstream.set("/v1/chat/completions", Reply.json("openai/chat_text.json", latency=2))
    with _client(w) as client, pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 504 and "total timeout of 0.3s" in err.value.message


def test_a_slow_answer_waits_for_the_first_byte_timeout_not_the_idle_one(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """A non-streaming completion that takes longer than the idle timeout to start (a reasoning model
    thinking) still arrives: only the first-byte timeout bounds the wait for the response."""
    w = make_worker(
        variables={"UPSTREAM_FIRST_BYTE_TIMEOUT": 5, "UPSTREAM_IDLE_TIMEOUT": 0.3},
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
    )
    fake_upstream.set("/v1/chat/completions", Reply.json("openai/chat_text.json", latency=1))
    with _client(w) as client:
        done = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert done.choices[0].message.content


def test_idle_timeout_ends_a_stalled_stream_with_an_error(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    w = make_worker(variables={"UPSTREAM_IDLE_TIMEOUT": 0.3}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    fake_upstream.set("/v1/chat/completions", Reply.stream("openai/chat_text.sse", chunk_delay=1.0))
    with _client(w) as client, pytest.raises(openai.APIError, match=r"timed out|mid-stream"):
        list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )


def test_a_models_entry_named_smart_auto_is_a_config_error() -> None:
    """The router's own name cannot be rerouted: the entry would be listed and then ignored."""
    entry = [{"name": "smart-auto", "provider": "anthropic", "upstream_model": "claude-haiku-4-5"}]
    with pytest.raises(ConfigError) as info:
        parse_model_table(entry, "wrangler_local.toml")
    assert info.value.key == "models[0].name" and "smart-auto" in info.value.problem


def test_an_unknown_field_of_a_models_entry_is_a_config_error() -> None:
    entry = [{"name": "house", "provider": "local", "contxt_window": 32000}]  # a typo of context_window
    with pytest.raises(ConfigError) as info:
        parse_model_table(entry, "wrangler_local.toml")
    assert info.value.key == "models[0].contxt_window" and "context_window" in info.value.problem


@pytest.mark.parametrize("name", ["RATE_LIMIT_PER_MINUTE", "RATE_LIMIT_IP_PER_MINUTE"])
def test_a_rate_limit_of_zero_a_minute_is_a_config_error(tmp_path: Path, name: str) -> None:
    """It would refuse every request (it used to mean one a minute, silently); RATE_LIMIT = "off" is the way."""
    config = load_test_config(write_config(tmp_path, {name: 0}))
    with pytest.raises(ConfigError) as err:
        build_gateway(config, MemoryKV())
    assert err.value.key == f"vars.{name}" and "from 1 to" in err.value.problem
