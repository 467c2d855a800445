"""What a translated request asks for is either honoured by the provider it goes to or refused, never dropped
while the client is told it worked.

- JSON mode: Claude answers in JSON only to a schema, so chat `response_format` and Responses `text.format`
  of `json_object` (and a chat `json_schema` without a schema) are 400s naming the client's field when sent to
  Claude; Anthropic's beta `output_format` reaches an OpenAI-format upstream as `output_config.format` does.
- Fields the answer depends on that a translation cannot carry (log probabilities, audio, logit_bias, legacy
  functions, chat web search for Claude, a whitespace-only stop sequence for Claude) are 400s naming them;
  same-format requests carry them as sent, and fields that only tune the answer are still left out.
- `tool_choice: {"type": "allowed_tools", …}` (chat and Responses shapes) reaches Claude and OpenRouter as only
  the allowed tools, `auto` as auto and `required` as Claude's `any`.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import GatewaySetup

CLAUDE = "claude-sonnet-4-6"
HI: Any = [{"role": "user", "content": "hi"}]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


def _refused(gateway: GatewaySetup, call: Any, param: str) -> openai.BadRequestError:
    """`call()` is a 400 naming `param`, and nothing reached the upstream."""
    before = len(gateway.fake.received)
    with pytest.raises(openai.BadRequestError) as err:
        call()
    assert err.value.status_code == 400 and err.value.param == param, err.value.body
    assert len(gateway.fake.received) == before
    return err.value


# ---- JSON mode ------


def test_json_mode_without_a_schema_is_refused_for_claude_not_dropped(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    err = _refused(
        gateway,
        lambda: client.chat.completions.create(
            model=CLAUDE, messages=HI, response_format={"type": "json_object"}
        ),
        "response_format",
    )
    assert "json_schema" in err.message
    _refused(
        gateway,
        lambda: client.responses.create(model=CLAUDE, input="hi", text={"format": {"type": "json_object"}}),
        "text.format",
    )
    # A json_schema without its schema asks for JSON just the same.
    _refused(
        gateway,
        lambda: client.chat.completions.create(
            model=CLAUDE, messages=HI, response_format={"type": "json_schema", "json_schema": {"name": "x"}}
        ),
        "response_format.json_schema.schema",
    )
    # With a schema, Claude is asked for it; plain text asks for nothing.
    client.chat.completions.create(
        model=CLAUDE,
        messages=HI,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}},
    )
    assert gateway.fake.last().json["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    client.responses.create(model=CLAUDE, input="hi", text={"format": {"type": "text"}})
    assert "output_config" not in gateway.fake.last().json
    # Providers with a JSON mode get it: chat to OpenRouter as sent, Responses translated for it.
    client.chat.completions.create(
        model="meta-llama/llama-3.3-70b-instruct", messages=HI, response_format={"type": "json_object"}
    )
    assert gateway.fake.last().json["response_format"] == {"type": "json_object"}
    client.responses.create(
        model="meta-llama/llama-3.3-70b-instruct", input="hi", text={"format": {"type": "json_object"}}
    )
    assert gateway.fake.last().json["response_format"] == {"type": "json_object"}


def test_anthropics_beta_output_format_reaches_an_openai_model(gateway: GatewaySetup) -> None:
    client = gateway.anthropic()
    beta = {"anthropic-beta": "structured-outputs-2025-11-13"}
    fmt = {"type": "json_schema", "schema": SCHEMA}
    client.messages.create(
        model="gpt-4o-mini",
        max_tokens=64,
        messages=HI,
        extra_body={"output_format": fmt},
        extra_headers=beta,
    )
    sent = gateway.fake.last().json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == SCHEMA
    # The same with output_config.format, and both saying the same thing.
    client.messages.create(
        model="gpt-4o-mini",
        max_tokens=64,
        messages=HI,
        extra_body={"output_config": {"format": fmt}, "output_format": fmt},
    )
    assert gateway.fake.last().json["response_format"] == sent
    before = len(gateway.fake.received)
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model="gpt-4o-mini",
            max_tokens=64,
            messages=HI,
            extra_body={"output_format": {"type": "json_object"}},
            extra_headers=beta,
        )
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "output_format" in err.value.message and len(gateway.fake.received) == before
    # Claude gets the beta field as sent.
    client.messages.create(
        model=CLAUDE, max_tokens=64, messages=HI, extra_body={"output_format": fmt}, extra_headers=beta
    )
    assert json.loads(gateway.fake.last().body)["output_format"] == fmt


# ---- fields a translation cannot carry ------

CHAT_REFUSED: Any = [
    ({"logprobs": True}, "logprobs"),
    ({"logprobs": False, "top_logprobs": 3}, "top_logprobs"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"web_search_options": {"search_context_size": "low"}}, "web_search_options"),
    ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
    ({"stop": "\n"}, "stop"),
    ({"stop": ["END", " \n"]}, "stop"),
]


@pytest.mark.parametrize(("extra", "param"), CHAT_REFUSED, ids=[p for _, p in CHAT_REFUSED])
def test_chat_fields_claude_cannot_honour_are_400s_naming_them(
    gateway: GatewaySetup, extra: dict[str, Any], param: str
) -> None:
    client = gateway.openai()
    for stream in (False, True):
        err = _refused(
            gateway,
            lambda stream=stream: client.chat.completions.create(
                model=CLAUDE, messages=HI, stream=stream, extra_body=extra
            ),
            param,
        )
        assert err.code == "unsupported_for_provider"
    # In its own format (OpenAI, OpenRouter) the field goes as sent.
    for model in ("gpt-4o-mini", "openai/gpt-4o-mini"):
        client.chat.completions.create(model=model, messages=HI, extra_body=extra)
        sent = gateway.fake.last().json
        assert {k: sent.get(k) for k in extra} == extra


def test_chat_fields_that_do_not_change_what_is_asked_still_go_to_claude(gateway: GatewaySetup) -> None:
    """Off values ask for nothing; tuning fields and penalties (no Claude equivalent) are left out."""
    gateway.openai().chat.completions.create(
        model=CLAUDE,
        messages=HI,
        logprobs=False,
        top_logprobs=0,
        modalities=["text"],
        logit_bias={},
        frequency_penalty=0.5,
        presence_penalty=0.5,
        seed=7,
        service_tier="auto",
        store=False,
        prediction={"type": "content", "content": "hello"},
        stop=["END", ""],
    )
    sent = gateway.fake.last().json
    assert sent["stop_sequences"] == ["END"]
    assert not {"logprobs", "frequency_penalty", "presence_penalty", "seed", "prediction"} & set(sent)


RESPONSES_REFUSED: Any = [
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"include": ["reasoning.encrypted_content", "message.output_text.logprobs"]}, "include[1]"),
]


@pytest.mark.parametrize(("extra", "param"), RESPONSES_REFUSED, ids=[p for _, p in RESPONSES_REFUSED])
def test_responses_fields_a_translation_cannot_honour_are_400s_naming_them(
    gateway: GatewaySetup, extra: dict[str, Any], param: str
) -> None:
    client = gateway.openai()
    for model in (CLAUDE, "meta-llama/llama-3.3-70b-instruct", "local/qwen"):
        _refused(
            gateway, lambda m=model: client.responses.create(model=m, input="hi", extra_body=extra), param
        )
    # OpenAI gets the request as sent.
    client.responses.create(model="gpt-4o-mini", input="hi", extra_body=extra)
    sent = gateway.fake.last().json
    assert {k: sent.get(k) for k in extra} == extra
    # Codex asks for encrypted reasoning with every request: that alone is no reason to refuse it.
    client.responses.create(model=CLAUDE, input="hi", include=["reasoning.encrypted_content"], top_logprobs=0)
    assert gateway.fake.last().path == "/v1/messages"


# ---- allowed_tools ------


def _chat_tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "parameters": {"type": "object", "properties": {}}},
    }


def _responses_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}}


def test_allowed_tools_reach_claude_as_only_those_tools(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    tools: Any = [_chat_tool("get_weather"), _chat_tool("get_time"), _chat_tool("send_mail")]
    for mode, sent_choice in (("required", {"type": "any"}), ("auto", {"type": "auto"})):
        allowed = {
            "mode": mode,
            "tools": [{"type": "function", "function": {"name": n}} for n in ("send_mail", "get_weather")],
        }
        client.chat.completions.create(
            model=CLAUDE,
            messages=HI,
            tools=tools,
            tool_choice={"type": "allowed_tools", "allowed_tools": allowed},  # type: ignore[typeddict-item]
        )
        sent = gateway.fake.last().json
        assert [t["name"] for t in sent["tools"]] == ["get_weather", "send_mail"]  # in declared order
        assert sent["tool_choice"] == sent_choice

    responses_tools: Any = [_responses_tool("get_weather"), _responses_tool("get_time")]
    for model, path in (
        (CLAUDE, "/v1/messages"),
        ("meta-llama/llama-3.3-70b-instruct", "/api/v1/chat/completions"),
    ):
        client.responses.create(
            model=model,
            input="hi",
            tools=responses_tools,
            tool_choice={
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "get_time"}],
            },
        )
        sent = gateway.fake.last(path).json
        names = [t.get("name") or t["function"]["name"] for t in sent["tools"]]
        assert names == ["get_time"] and sent["tool_choice"] in ({"type": "any"}, "required")

    # A tool the request does not declare cannot be allowed.
    _refused(
        gateway,
        lambda: client.chat.completions.create(
            model=CLAUDE,
            messages=HI,
            tools=tools,
            tool_choice={  # type: ignore[typeddict-item]
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "nope"}}],
                },
            },
        ),
        "tool_choice.allowed_tools.tools[0].function.name",
    )
    _refused(
        gateway,
        lambda: client.responses.create(
            model=CLAUDE,
            input="hi",
            tools=responses_tools,
            tool_choice={"type": "allowed_tools", "mode": "sometimes", "tools": []},  # type: ignore[typeddict-item]
        ),
        "tool_choice.mode",
    )
    # OpenAI gets the choice as sent.
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get_time"}}]},
    }
    client.chat.completions.create(model="gpt-4o-mini", messages=HI, tools=tools, tool_choice=choice)  # type: ignore[arg-type]
    sent = gateway.fake.last().json
    assert sent["tool_choice"] == choice and len(sent["tools"]) == 3
