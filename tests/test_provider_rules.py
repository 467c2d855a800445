"""Requests the gateway builds for a provider follow that provider's rules, so it does not refuse them.

- Claude models that take temperature or top_p but not both (Sonnet/Haiku 4.5 and on) get temperature only;
  Claude Opus 4.7, which takes no sampling parameters, gets none.
- OpenAI reasoning models get no temperature or top_p other than 1 and no stop sequences (nor penalties or
  log probabilities) from a translated request or when smart-auto chose them; a client that names one in
  its own format gets its body forwarded as sent.
- A chat user turn with no content is a 400 naming it when the request is translated for Claude (which would
  be sent no conversation, or one ending with the assistant's turn); so is one of only whitespace.
- Whitespace-only text, which Claude refuses as all of a message or system prompt, is left out of what it is
  sent: a chat client that got `"\n\n"` from Claude can go on with the conversation.
- More than 4 stop sequences for an OpenAI chat model (its limit) are a 400 naming the client's field.
- An image for Claude is sent with its registered media type (`image/jpg` is `image/jpeg`); one of a type
  Claude does not take is a 400 naming the client's field.
- A Messages request for Claude without `max_tokens`, which Anthropic requires, is sent DEFAULT_MAX_TOKENS.
- `/v1/messages/count_tokens` expands TrexID references as `/v1/messages` does, and never forwards `trex`.
- Proxied requests honour a coding-agent profile (`X-Trex-Compression-Model`, `trex.optimize.compression_model`)
  as `/v1/compress` does.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import UPSTREAM_KEYS, GatewaySetup
from tests.fakes.upstream import Reply
from tests.optimize.kinds._data import app_log
from worker.appkeys import GATEWAY

HI: Any = [{"role": "user", "content": "hi"}]
# (The Anthropic SDK has no sampling parameters any more: its clients send them as extra body fields.)


def _sampling(sent: dict[str, Any]) -> dict[str, Any]:
    return {k: sent[k] for k in ("temperature", "top_p", "top_k") if k in sent}


def test_claude_gets_only_the_sampling_parameters_its_model_takes(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    client.chat.completions.create(model="claude-sonnet-4-6", messages=HI, temperature=0.7, top_p=0.9)
    assert _sampling(gateway.fake.last().json) == {"temperature": 0.7}
    # A dated snapshot follows its model; top_p alone is kept.
    client.responses.create(model="claude-haiku-4-5-20251001", input="hi", temperature=0.5, top_p=0.8)
    assert _sampling(gateway.fake.last().json) == {"temperature": 0.5}
    client.chat.completions.create(model="claude-haiku-4-5", messages=HI, top_p=0.8)
    assert _sampling(gateway.fake.last().json) == {"top_p": 0.8}
    client.chat.completions.create(
        model="claude-opus-4-7", messages=HI, temperature=0.2, top_p=0.9, extra_body={"top_k": 5}
    )
    assert _sampling(gateway.fake.last().json) == {}
    # A model that takes both still gets both.
    client.chat.completions.create(model="claude-3-7-sonnet-latest", messages=HI, temperature=0.2, top_p=0.9)
    assert _sampling(gateway.fake.last().json) == {"temperature": 0.2, "top_p": 0.9}


def test_openai_reasoning_models_get_no_parameters_they_refuse(gateway: GatewaySetup) -> None:
    claude_client = gateway.anthropic()
    claude_client.messages.create(
        model="o4-mini", max_tokens=512, messages=HI, stop_sequences=["END"], extra_body={"temperature": 0}
    )
    sent = gateway.fake.last().json
    assert sent["max_completion_tokens"] == 512 and "temperature" not in sent and "stop" not in sent
    claude_client.messages.create(
        model="gpt-5-mini", max_tokens=512, messages=HI, extra_body={"temperature": 1, "top_p": 0.9}
    )
    assert _sampling(gateway.fake.last().json) == {"temperature": 1}  # its default is accepted
    # Not a reasoning model: all of it goes.
    claude_client.messages.create(
        model="gpt-4.1", max_tokens=512, messages=HI, stop_sequences=["END"], extra_body={"temperature": 0.3}
    )
    sent = gateway.fake.last().json
    assert (sent["temperature"], sent["stop"]) == (0.3, ["END"])

    client = gateway.openai()
    # smart-auto picks a reasoning model (reasoning_effort needs one): what it refuses is left out.
    raw = client.chat.completions.with_raw_response.create(
        model="smart-auto",
        messages=HI,
        reasoning_effort="low",
        temperature=0.2,
        top_p=1,
        stop=["END"],
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logprobs=True,
        top_logprobs=2,
    )
    assert raw.headers["X-Trex-Upstream-Model"].startswith(("o", "gpt-5"))
    sent = gateway.fake.last().json
    assert sent["reasoning_effort"] == "low" and _sampling(sent) == {"top_p": 1}
    assert not {"stop", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs"} & set(sent)
    raw = client.responses.with_raw_response.create(
        model="smart-auto", input="hi", reasoning={"effort": "low"}, temperature=0.3, top_p=0.5
    )
    assert gateway.fake.last().path == "/v1/responses" and _sampling(gateway.fake.last().json) == {}
    # A reasoning model the client names in its own format gets the body as sent.
    client.chat.completions.create(model="o4-mini", messages=HI, temperature=0.2, stop=["END"])
    sent = gateway.fake.last().json
    assert (sent["temperature"], sent["stop"]) == (0.2, ["END"])


def test_smart_auto_sends_claude_only_the_sampling_parameters_it_takes(gateway: GatewaySetup) -> None:
    keys = gateway.worker.app[GATEWAY].keys
    record, token = gateway.worker.call(keys.create("claude only"))
    gateway.worker.call(keys.bind(record.id, "anthropic", UPSTREAM_KEYS["anthropic"]))
    raw = gateway.anthropic(key=token).messages.with_raw_response.create(
        model="smart-auto", max_tokens=100, messages=HI, extra_body={"temperature": 0.5, "top_p": 0.9}
    )
    assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"
    assert _sampling(gateway.fake.last().json) == {"temperature": 0.5}
    # Named by the client in its own format: as sent.
    gateway.anthropic(key=token).messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=HI, extra_body={"temperature": 0.5, "top_p": 0.9}
    )
    assert _sampling(gateway.fake.last().json) == {"temperature": 0.5, "top_p": 0.9}


def test_an_empty_chat_user_turn_for_claude_is_a_400_naming_it(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    cases: Any = [
        (
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ""}],
            "messages[1].content",
        ),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": [{"type": "text", "text": ""}]},
            ],
            "messages[2].content",
        ),
    ]
    for messages, param in cases:
        before = len(gateway.fake.received)
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="claude-sonnet-4-6", messages=messages)
        assert err.value.status_code == 400 and err.value.param == param
        assert len(gateway.fake.received) == before  # nothing was forwarded
    # In its own format the request goes as sent.
    client.chat.completions.create(model="gpt-4.1", messages=cases[0][0])
    assert gateway.fake.last().json["messages"][1] == {"role": "user", "content": ""}


def test_whitespace_only_text_is_not_sent_to_claude(gateway: GatewaySetup) -> None:
    claude = "claude-sonnet-4-6"
    blank = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": claude,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "content": [{"type": "text", "text": "\n\n"}],
        "usage": {"input_tokens": 10, "output_tokens": 2},
    }
    gateway.fake.enqueue("/v1/messages", Reply.json(blank))
    client = gateway.openai()
    history: Any = [{"role": "system", "content": "  "}, {"role": "user", "content": "Anything to add?"}]
    answer = client.chat.completions.create(model=claude, messages=history).choices[0].message
    assert answer.content == "\n\n"
    history += [{"role": "assistant", "content": answer.content}, {"role": "user", "content": "Next step?"}]
    client.chat.completions.create(model=claude, messages=history)
    sent = gateway.fake.last().json
    assert "system" not in sent
    # The blank assistant turn is left out; the two user turns around it are one, as Claude reads them.
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Anything to add?"}, {"type": "text", "text": "Next step?"}],
        }
    ]
    # Beside a tool call, a blank text is left out and the call kept.
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    client.chat.completions.create(
        model=claude,
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": " ", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "done"},
        ],
        tools=[{"type": "function", "function": {"name": "f"}}],
    )
    assistant = gateway.fake.last().json["messages"][1]
    assert [b["type"] for b in assistant["content"]] == ["tool_use"]
    client.responses.create(
        model=claude,
        input=[
            {"role": "user", "content": "hi"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "\n"}]},
            {"role": "user", "content": "again"},
        ],
    )
    assert [m["role"] for m in gateway.fake.last().json["messages"]] == ["user"]


def test_a_whitespace_only_user_turn_for_claude_is_a_400_naming_it(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    before = len(gateway.fake.received)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="claude-sonnet-4-6",
            messages=[
                {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": " "}]}
            ],
        )
    assert err.value.param == "messages[0].content"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(
            model="claude-sonnet-4-6",
            input=[{"role": "user", "content": [{"type": "input_text", "text": " "}]}],
        )
    assert err.value.param == "input[0].content"
    with pytest.raises(openai.BadRequestError) as err:  # nothing but a system prompt
        client.chat.completions.create(
            model="claude-sonnet-4-6", messages=[{"role": "system", "content": "Be brief."}]
        )
    assert err.value.param == "messages"
    assert len(gateway.fake.received) == before


def test_count_tokens_expands_trex_references_like_messages(gateway: GatewaySetup) -> None:
    stored: Any = gateway.openai().post(
        "/compress",
        body={
            "model": "claude-sonnet-4-6",
            "messages": [{"role": "user", "content": "Order ord_123 costs $42.50; ship by 2026-12-24."}],
            "trex": {"store_context": True},
        },
        cast_to=object,
    )
    trex_id = stored["trex_id"]
    gateway.fake.set("/v1/messages/count_tokens", Reply.json({"input_tokens": 42}))
    client = gateway.anthropic()
    ref: Any = [{"type": "trex_ref", "trex_id": trex_id}, {"type": "text", "text": "Summarise the order."}]
    assert (
        client.messages.count_tokens(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": ref}]
        ).input_tokens
        == 42
    )
    sent = gateway.fake.last("/v1/messages/count_tokens").json
    first = sent["messages"][0]["content"][0]
    assert first["type"] == "text" and f"TrexID {trex_id}" in first["text"] and "ord_123" in first["text"]
    client.messages.count_tokens(
        model="claude-sonnet-4-6",
        messages=[{"role": "user", "content": "Summarise the order."}],
        extra_body={"trex": {"context_ref": [trex_id]}},
    )
    sent = gateway.fake.last("/v1/messages/count_tokens").json
    assert "trex" not in sent and "ord_123" in json.dumps(sent["messages"])
    # Counted here for another model: the expansion counts.
    plain = client.messages.count_tokens(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Summarise the order."}]
    ).input_tokens
    expanded = client.messages.count_tokens(
        model="gpt-4o-mini", messages=[{"role": "user", "content": ref}]
    ).input_tokens
    assert expanded > plain + 10
    # A reference to nothing is a 404, as on /v1/messages.
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(
            model="claude-sonnet-4-6",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"trex": {"context_ref": ["tzp_00000000000000000000000000000000"]}},
        )


def test_a_messages_request_without_max_tokens_gets_the_default(gateway: GatewaySetup) -> None:
    # (The Anthropic SDK always sends max_tokens; a plain HTTP client may not.)
    gateway.openai().post(
        "/messages",
        body={"model": "claude-sonnet-4-6", "messages": HI},
        cast_to=object,
        options={"headers": {"anthropic-version": "2023-06-01"}},
    )
    assert gateway.fake.last("/v1/messages").json["max_tokens"] == 4096  # DEFAULT_MAX_TOKENS's default
    gateway.anthropic().messages.create(model="claude-sonnet-4-6", max_tokens=77, messages=HI)
    assert gateway.fake.last("/v1/messages").json["max_tokens"] == 77


def test_more_stop_sequences_than_openai_takes_are_a_400_naming_the_clients_field(
    gateway: GatewaySetup,
) -> None:
    client = gateway.anthropic()
    five = ["\n\nHuman:", "END", "###", "</answer>", "STOP"]
    before = len(gateway.fake.received)
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="gpt-4.1", max_tokens=64, messages=HI, stop_sequences=five)
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "stop_sequences" in err.value.message and "at most 4" in err.value.message
    assert len(gateway.fake.received) == before
    client.messages.create(model="gpt-4.1", max_tokens=64, messages=HI, stop_sequences=five[:4])
    assert gateway.fake.last().json["stop"] == five[:4]
    # OpenAI's limit is not Claude's, nor that of the models OpenRouter serves.
    client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=HI, stop_sequences=five)
    client.messages.create(model="meta-llama/llama-3.3-70b", max_tokens=64, messages=HI, stop_sequences=five)
    assert gateway.fake.last().json["stop"] == five


def test_images_for_claude_carry_a_media_type_it_takes(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    jpeg = "/9j/4AAQSkZJRg=="

    def chat_image(url: str) -> Any:
        return [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            },
        ]

    client.chat.completions.create(
        model="claude-sonnet-4-6", messages=chat_image(f"data:image/jpg;base64,{jpeg}")
    )
    image = gateway.fake.last().json["messages"][0]["content"][1]
    assert image["source"] == {"type": "base64", "media_type": "image/jpeg", "data": jpeg}
    client.responses.create(
        model="claude-sonnet-4-6",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": f"data:Image/PNG;base64,{jpeg}", "detail": "auto"},
                ],
            }
        ],
    )
    assert gateway.fake.last().json["messages"][0]["content"][1]["source"]["media_type"] == "image/png"
    before = len(gateway.fake.received)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="claude-sonnet-4-6", messages=chat_image(f"data:image/bmp;base64,{jpeg}")
        )
    assert err.value.param == "messages[1].content[1].image_url.url" and "image/bmp" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(
            model="claude-sonnet-4-6",
            input=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "input_image",
                            "image_url": f"data:image/tiff;base64,{jpeg}",
                            "detail": "auto",
                        }
                    ],
                }
            ],
        )
    assert err.value.param == "input[0].content[0].image_url"
    assert len(gateway.fake.received) == before


def test_proxied_requests_honour_a_coding_agent_profile(gateway: GatewaySetup) -> None:
    log = app_log(200)
    read: Any = {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "logs/app.log"}}
    messages: Any = [
        {"role": "user", "content": "Look at logs/app.log."},
        {"role": "assistant", "content": [{"type": "text", "text": "Reading it."}, read]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": log}]},
        {"role": "user", "content": "Why did the refund for ORD-20417 fail?"},
    ]

    def forwarded_read(**kw: Any) -> str:
        gateway.anthropic().messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=messages, **kw)
        content = gateway.fake.last("/v1/messages").json["messages"][2]["content"][0]["content"]
        assert isinstance(content, str)
        return content

    assert len(forwarded_read()) < len(log) // 2  # no profile: a log, folded
    # Claude Code's profile: a file it read is passed through (it quotes those lines in its edits).
    assert forwarded_read(extra_headers={"X-Trex-Compression-Model": "claude"}) == log
    assert forwarded_read(extra_body={"trex": {"optimize": {"compression_model": "claude"}}}) == log
    with pytest.raises(anthropic.BadRequestError) as err:
        forwarded_read(extra_headers={"X-Trex-Compression-Model": "vim"})
    assert "X-Trex-Compression-Model must be one of" in err.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        gateway.openai().chat.completions.create(
            model="gpt-4.1", messages=HI, extra_body={"trex": {"optimize": {"compression_model": "vim"}}}
        )
    assert bad.value.param == "trex.optimize.compression_model"
