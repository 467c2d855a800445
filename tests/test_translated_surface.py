"""What a translated request asks for is either honoured by the provider it goes to or refused, never dropped
while the client is told it worked.

- JSON mode: Claude answers in JSON only to a schema, so chat `response_format` and Responses `text.format`
  of `json_object` (and a chat `json_schema` without a schema) are 400s naming the client's field when sent to
  Claude; Anthropic's beta `output_format` reaches an OpenAI-format upstream as `output_config.format` does.
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
