"""The model catalog per key and smart-auto."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEYS
from tests.fakes.upstream import FakeUpstream
from tests.harness import InProcessWorker
from worker.accounting.pricing import BUILTIN_PRICES
from worker.appkeys import GATEWAY
from worker.catalog import BUILTIN_CATALOG, build_catalog
from worker.routing import parse_model_table

PLANS = (
    '[plans.small]\nmodels = ["gpt-4o-mini", "claude-haiku-*"]\n'
    '[plans.claude_first]\nmodels = ["claude-haiku-*", "gpt-4.1"]\n'  # Claude the cheaper of the two
)
CUSTOM = '[[models]]\nname = "house"\nprovider = "local"\nupstream_model = "qwen3:8b"\ncontext_window = 32000\ntier = "free"\ncapabilities = ["tools"]\n'


@pytest.fixture
def keyed(make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream) -> Iterator[Any]:
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY}, extra=PLANS + CUSTOM)
    opened: list[openai.OpenAI] = []

    def client(providers: tuple[str, ...] = tuple(UPSTREAM_KEYS), plan: str | None = None) -> openai.OpenAI:
        keys = worker.app[GATEWAY].keys
        record, token = worker.call(keys.create("c", plan=plan))
        for provider in providers:
            worker.call(keys.bind(record.id, provider, UPSTREAM_KEYS[provider]))
        c = openai.OpenAI(api_key=token, base_url=worker.url + "/v1", max_retries=0)
        opened.append(c)
        return c

    yield client
    for c in opened:
        c.close()


def test_models_lists_what_the_key_can_use_with_catalog_fields(keyed: Any) -> None:
    everything = {m.id: m for m in keyed().models.list()}
    assert {info.name for info in BUILTIN_CATALOG} | {"house"} == set(everything)
    mini = everything["gpt-4o-mini"].model_dump()
    assert mini["provider"] == "openai" and mini["context_window"] == 128_000 and mini["tier"] == "free"
    assert mini["pricing"]["input"] == BUILTIN_PRICES["gpt-4o-mini"].input
    assert "tools" in mini["capabilities"]
    assert everything["house"].model_dump()["context_window"] == 32000
    openai_only = {m.id for m in keyed(providers=("openai",)).models.list()}
    assert "gpt-4o-mini" in openai_only and "claude-haiku-4-5" not in openai_only
    assert "house" in openai_only  # the local server needs no key
    planned = {m.id for m in keyed(plan="small").models.list()}
    assert planned == {"gpt-4o-mini", "claude-haiku-4-5"}


def test_one_model_by_id(keyed: Any) -> None:
    client = keyed(providers=("anthropic",))
    assert client.models.retrieve("claude-haiku-4-5").model_dump()["provider"] == "anthropic"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4o-mini")  # exists, but this key cannot reach OpenAI
    assert err.value.code == "model_not_found"


def test_a_model_the_key_can_send_to_is_found_by_id_outside_the_catalog(keyed: Any) -> None:
    """`models.retrieve` of a model chat would serve (`gpt-4o`, an older Claude, an OpenRouter id) answers
    with a minimal model in the SDK's shape, not a 404; a model the key cannot reach or use is still one."""
    client = keyed()
    for model, provider in (
        ("gpt-4o", "openai"),
        ("claude-sonnet-4-5", "anthropic"),
        ("meta-llama/llama-3.3-70b-instruct", "openrouter"),
        ("local/qwen3:8b", "local"),
    ):
        assert all(m.id != model for m in client.models.list())
        found = client.models.retrieve(model)
        assert (found.id, found.object, found.owned_by) == (model, "model", provider)
        assert found.model_dump()["provider"] == provider
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    url = str(client.base_url).removesuffix("/v1/")
    with anthropic.Anthropic(api_key=client.api_key, base_url=url, max_retries=0) as claude:
        info = claude.models.retrieve("claude-sonnet-4-5")
        assert (info.id, info.type, info.display_name) == ("claude-sonnet-4-5", "model", "claude-sonnet-4-5")
    with pytest.raises(openai.NotFoundError):
        keyed(providers=("anthropic",)).models.retrieve("gpt-4o")  # no OpenAI key
    with pytest.raises(openai.NotFoundError):
        keyed(plan="small").models.retrieve("gpt-4o")  # not on the plan
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")  # no provider serves it


def test_smart_auto_picks_the_cheapest_fitting_model(keyed: Any, fake_upstream: FakeUpstream) -> None:
    client = keyed()
    raw = client.chat.completions.with_raw_response.create(
        model="smart-auto", messages=[{"role": "user", "content": "hi"}]
    )
    cheapest = min(
        (i for i in BUILTIN_CATALOG if "embeddings" not in i.capabilities),
        key=lambda i: BUILTIN_PRICES[i.name].input + BUILTIN_PRICES[i.name].output / 4,
    )
    assert raw.headers["X-Trex-Upstream-Model"] == cheapest.name
    assert fake_upstream.last().json["model"] == cheapest.name
    # A requested output above some models' maximum rules them out; so does a needed capability.
    raw = client.chat.completions.with_raw_response.create(
        model="smart-auto", messages=[{"role": "user", "content": "hi"}], max_tokens=100_000
    )
    chosen = raw.headers["X-Trex-Upstream-Model"]
    assert next(i for i in BUILTIN_CATALOG if i.name == chosen).max_output >= 100_000
    raw = client.chat.completions.with_raw_response.create(
        model="smart-auto",
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert (
        "json"
        in next(i for i in BUILTIN_CATALOG if i.name == raw.headers["X-Trex-Upstream-Model"]).capabilities
    )


def test_smart_auto_respects_plan_and_reach_and_falls_back(keyed: Any, fake_upstream: FakeUpstream) -> None:
    raw = keyed(plan="small").chat.completions.with_raw_response.create(
        model="smart-auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["X-Trex-Upstream-Model"] in ("gpt-4o-mini", "claude-haiku-4-5")
    anthropic_only = keyed(providers=("anthropic",))
    raw = anthropic_only.chat.completions.with_raw_response.create(
        model="smart-auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"
    with pytest.raises(openai.BadRequestError) as err:
        keyed(plan="small").chat.completions.create(
            model="smart-auto", messages=[{"role": "user", "content": "hi"}], max_tokens=500_000
        )
    assert err.value.code == "no_model_fits"


def test_smart_auto_falls_back_to_the_next_cheapest(keyed: Any, fake_upstream: FakeUpstream) -> None:
    from tests.fakes.upstream import Reply

    busy = Reply.json({"error": {"message": "busy", "type": "x"}}, status=503)
    fake_upstream.enqueue("/v1/chat/completions", busy, busy)  # the first choice and its one retry
    client = keyed()
    first = client.chat.completions.with_raw_response.create(
        model="smart-auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert first.headers["X-Trex-Fallback-Attempts"] == "2"
    sent = [r.json["model"] for r in fake_upstream.received if r.json and "model" in r.json]
    assert sent[0] == sent[1] != sent[2] == first.headers["X-Trex-Upstream-Model"]


def test_smart_auto_moves_on_when_its_first_choice_cannot_take_the_request(
    keyed: Any, fake_upstream: FakeUpstream
) -> None:
    """A choice whose provider cannot take the request as it is (here Claude, given tool-call arguments that
    are not a JSON object) is skipped like a failing one: the next fitting model answers."""
    messages: Any = [
        {"role": "user", "content": "list them"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "ids", "arguments": "[1, 2]"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "1, 2"},
    ]
    tools: Any = [{"type": "function", "function": {"name": "ids", "parameters": {"type": "object"}}}]
    client = keyed(plan="claude_first")
    raw = client.chat.completions.with_raw_response.create(model="smart-auto", messages=messages, tools=tools)
    assert raw.parse().choices[0].message.content
    assert raw.headers["X-Trex-Upstream-Model"] == "gpt-4.1"
    assert raw.headers["X-Trex-Fallback-Attempts"] == "0"  # nothing was sent to Claude
    assert [r.path for r in fake_upstream.received] == ["/v1/chat/completions"]
    assert fake_upstream.last().json["messages"][1]["tool_calls"][0]["function"]["arguments"] == "[1, 2]"
    event: Any = {}
    for _ in range(200):  # the usage event is written after the response
        event = client.get(f"/usage/events/{raw.headers['X-Trex-Usage-Event-Id']}", cast_to=object)
        if event["status"] == "final":
            break
        time.sleep(0.05)
    skipped, served = event["attempts"]
    assert (skipped["model"], skipped["status"]) == ("claude-haiku-4-5", None)
    assert "JSON object" in skipped["error"]
    assert (served["model"], served["status"]) == ("gpt-4.1", 200)


def _client_of(make_worker: Callable[..., InProcessWorker], extra: str) -> openai.OpenAI:
    """An OpenAI client with a new key on a worker with `extra` config (close it after use)."""
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY}, extra=extra)
    _, token = worker.call(worker.app[GATEWAY].keys.create("t"))
    return openai.OpenAI(api_key=token, base_url=worker.url + "/v1", max_retries=0)


def test_a_configured_price_prices_a_local_model_everywhere(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    """A `[pricing]` entry for a local model's name is its price in the catalog too (the upstream model it is
    served as has none)."""
    extra = (
        '[[models]]\nname = "house"\nprovider = "local"\nupstream_model = "llama3.1:8b"\n'
        '[pricing."house"]\ninput = 0.01\noutput = 0.02\n'
    )
    with _client_of(make_worker, extra) as client:
        listed = client.models.retrieve("house").model_dump()
    assert listed["pricing"]["input"] == 0.01 and listed["pricing"]["output"] == 0.02


def test_smart_auto_skips_models_whose_context_window_is_too_small(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    tiny = (
        '[[models]]\nname = "tiny"\nprovider = "local"\nupstream_model = "tiny:1b"\ncontext_window = 1000\n'
        'capabilities = ["tools", "json"]\n[pricing."tiny:1b"]\ninput = 0.0\noutput = 0.0\n'
    )
    with _client_of(make_worker, tiny) as client:
        short = client.chat.completions.with_raw_response.create(
            model="smart-auto", messages=[{"role": "user", "content": "hi"}]
        )
        assert short.headers["X-Trex-Upstream-Model"] == "tiny:1b"  # free and big enough
        words = " ".join(f"word{i}" for i in range(1500))  # the latest turn: never compacted
        # Only the local server is reachable (no bindings) and its window is too small: nothing fits.
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="smart-auto", messages=[{"role": "user", "content": words}])
        assert err.value.code == "no_model_fits" and "input tokens" in err.value.message
        # With every provider reachable, a model whose window holds the request is chosen instead.
        long = client.chat.completions.with_raw_response.create(
            model="smart-auto",
            messages=[{"role": "user", "content": words}],
            extra_headers={"X-Upstream-Api-Key": "sk-x"},
        )
        assert int(long.headers["X-Trex-Optimized-Tokens"]) > 1000
        assert long.headers["X-Trex-Upstream-Model"] != "tiny:1b"


def test_smart_auto_picks_a_model_that_can_take_what_the_request_asks(
    keyed: Any, fake_upstream: FakeUpstream
) -> None:
    """A Messages search result or server tool only Claude can take, a Responses built-in tool only OpenAI can,
    and a reasoning setting only a reasoning model accepts: smart-auto picks accordingly instead of a model
    that answers 400. A reasoning model is sent `max_completion_tokens`, which it requires."""
    client = keyed()
    token = client.api_key
    worker_url = str(client.base_url).removesuffix("/v1/")
    claude = anthropic.Anthropic(api_key=token, base_url=worker_url, max_retries=0)
    try:
        doc = {"type": "search_result", "source": "https://example.com", "title": "t", "content": []}
        raw = claude.messages.with_raw_response.create(
            model="smart-auto",
            max_tokens=100,
            messages=[{"role": "user", "content": [doc, {"type": "text", "text": "Summarize"}]}],  # type: ignore[list-item]
        )
        assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"
    finally:
        claude.close()
    raw = client.responses.with_raw_response.create(
        model="smart-auto", input="news?", tools=[{"type": "web_search_preview"}]
    )
    assert raw.headers["X-Trex-Upstream-Provider"] == "openai"
    raw = client.chat.completions.with_raw_response.create(
        model="smart-auto",
        messages=[{"role": "user", "content": "think"}],
        reasoning_effort="high",
        max_tokens=1000,
    )
    chosen = next(i for i in BUILTIN_CATALOG if i.name == raw.headers["X-Trex-Upstream-Model"])
    assert "reasoning" in chosen.capabilities
    sent = fake_upstream.last().json
    if raw.headers["X-Trex-Upstream-Provider"] == "openai":
        assert sent["max_completion_tokens"] == 1000 and "max_tokens" not in sent


def test_the_anthropic_sdk_lists_models_in_anthropics_shape(keyed: Any) -> None:
    """`anthropic.Anthropic().models.list()` (and Claude Code's model discovery) read Anthropic's model
    objects and pages; the OpenAI SDK still gets OpenAI's list. Errors there are Anthropic-shaped."""
    openai_client = keyed()
    expected = sorted(m.id for m in openai_client.models.list())
    url = str(openai_client.base_url).removesuffix("/v1/")
    with anthropic.Anthropic(api_key=openai_client.api_key, base_url=url, max_retries=0) as claude:
        seen = [m for m in claude.models.list(limit=5)]  # the SDK follows after_id page by page
        assert [m.id for m in seen] == expected and all(m.type == "model" and m.display_name for m in seen)
        first = claude.models.list(limit=2)
        assert first.has_more and first.first_id == expected[0] and first.last_id == expected[1]
        one = claude.models.retrieve(expected[0])
        assert one.id == expected[0] and one.created_at.year == 2026
        try:
            claude.models.retrieve("no-such-model")
        except anthropic.NotFoundError as exc:
            assert isinstance(exc.body, dict) and exc.body["type"] == "error"
        else:
            raise AssertionError("found a model that does not exist")


def test_smart_auto_sends_a_json_schema_to_claude_but_never_json_mode(
    keyed: Any, fake_upstream: FakeUpstream
) -> None:
    """Claude takes a schema (`output_config.format`) but has no JSON mode: on a plan where Claude is the
    cheaper choice, a schema goes to Claude and JSON mode to the OpenAI model."""
    client = keyed(plan="claude_first")
    schema = {
        "name": "answer",
        "schema": {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
            "additionalProperties": False,
        },
    }
    raw = client.chat.completions.with_raw_response.create(
        model="smart-auto",
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_schema", "json_schema": schema},  # type: ignore[typeddict-item]
    )
    assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"
    assert fake_upstream.last().json["output_config"]["format"]["schema"] == schema["schema"]
    raw = client.chat.completions.with_raw_response.create(
        model="smart-auto",
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert raw.headers["X-Trex-Upstream-Model"] == "gpt-4.1"
    assert fake_upstream.last().json["response_format"] == {"type": "json_object"}
    listed = {m.id: m.model_dump()["capabilities"] for m in client.models.list()}
    assert "json_schema" in listed["claude-haiku-4-5"] and "json" not in listed["claude-haiku-4-5"]


def test_a_models_table_that_says_json_keeps_meaning_structured_output_too() -> None:
    raw = [{"name": "house2", "provider": "local", "upstream_model": "q", "capabilities": ["json"]}]
    catalog = build_catalog(parse_model_table(raw, "test"), raw, "test")
    assert catalog["house2"].info.capabilities == {"json", "json_schema"}
    raw[0]["capabilities"] = ["json_schema"]
    catalog = build_catalog(parse_model_table(raw, "test"), raw, "test")
    assert catalog["house2"].info.capabilities == {"json_schema"}
