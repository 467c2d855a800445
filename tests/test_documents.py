"""PDFs and other documents across formats, through the worker with the official SDKs.

- An OpenAI chat `file` part or Responses `input_file` (base64 data URL or `file_url`) reaches Claude as a
  `document` block (its filename as the title); an Anthropic `document` (base64 PDF) reaches an OpenAI-format
  model as a chat `file` part named by its title, and a text document as text headed by its title.
- A PDF by URL reaches OpenRouter (which documents URLs in `file_data`) but no other chat upstream: a 400
  naming the field. File ids, Anthropic `file` sources and citations never cross: 400s naming the field.
- Same-format requests carry their documents as sent; the optimizer never changes a document's content.
- smart-auto sends a PDF only to a model that reads images, and what only one provider takes to its models;
  a PDF is counted by its pages, not by its base64.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEYS, GatewaySetup
from tests.fakes.upstream import FakeUpstream
from tests.harness import InProcessWorker
from tests.optimize.corpus import long_document
from worker.appkeys import GATEWAY
from worker.optimize.opaque import PAGE_TOKENS

CLAUDE = "claude-sonnet-4-6"
PDF = base64.b64encode(b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\ntrailer << >>\n%%EOF").decode()
PDF_URL = f"data:application/pdf;base64,{PDF}"
PDF_SOURCE = {"type": "base64", "media_type": "application/pdf", "data": PDF}
CLAUDE_DOCUMENT = {"type": "document", "source": PDF_SOURCE, "title": "report.pdf"}


def _chat_file(**file: Any) -> Any:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Summarize."}, {"type": "file", "file": file}],
        }
    ]


def _user(*blocks: Any) -> Any:
    return [{"role": "user", "content": list(blocks)}]


def test_a_pdf_from_a_chat_client_reaches_claude_as_a_document(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    messages = _chat_file(filename="report.pdf", file_data=PDF_URL)
    answer = client.chat.completions.create(model=CLAUDE, messages=messages)
    assert answer.choices[0].message.content
    sent = gateway.fake.last()
    assert sent.path == "/v1/messages"
    assert sent.json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Summarize."}, CLAUDE_DOCUMENT]}
    ]
    stream = client.chat.completions.create(model=CLAUDE, messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    sent = gateway.fake.last()
    assert sent.json["stream"] is True and sent.json["messages"][0]["content"][1] == CLAUDE_DOCUMENT
    # To an OpenAI model the part goes as the client sent it.
    client.chat.completions.create(model="gpt-4o", messages=messages)
    assert gateway.fake.last().json["messages"] == messages


def test_responses_input_files_reach_claude_by_data_or_url(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    content: Any = [
        {"type": "input_file", "filename": "report.pdf", "file_data": PDF_URL},
        {"type": "input_file", "file_url": "https://example.com/annual.pdf"},
        {"type": "input_text", "text": "Compare them."},
    ]
    expected = [
        CLAUDE_DOCUMENT,
        {"type": "document", "source": {"type": "url", "url": "https://example.com/annual.pdf"}},
        {"type": "text", "text": "Compare them."},
    ]
    response = client.responses.create(model=CLAUDE, input=[{"role": "user", "content": content}])
    assert response.output_text
    assert gateway.fake.last().json["messages"][0]["content"] == expected
    with client.responses.stream(model=CLAUDE, input=[{"role": "user", "content": content}]) as stream:
        assert stream.get_final_response().status == "completed"
    sent = gateway.fake.last().json
    assert sent["stream"] is True and sent["messages"][0]["content"] == expected


def test_claude_documents_reach_openai_models_as_files_and_text(gateway: GatewaySetup) -> None:
    claude = gateway.anthropic()
    notes = {"type": "text", "media_type": "text/plain", "data": "Revenue grew 12%."}
    messages = _user(
        {**CLAUDE_DOCUMENT, "title": "Q3 report", "context": "Written by the finance team."},
        {"type": "document", "source": notes, "title": "Notes", "citations": {"enabled": False}},
        {"type": "text", "text": "What changed?"},
    )
    expected = [
        {"type": "text", "text": "Written by the finance team."},
        {"type": "file", "file": {"filename": "Q3 report.pdf", "file_data": PDF_URL}},
        {"type": "text", "text": "# Notes\n\nRevenue grew 12%."},
        {"type": "text", "text": "What changed?"},
    ]
    answer = claude.messages.create(model="gpt-4o", max_tokens=100, messages=messages)
    assert answer.content[0].type == "text"
    sent = gateway.fake.last()
    assert sent.path == "/v1/chat/completions" and sent.json["messages"][0]["content"] == expected
    with claude.messages.stream(model="gpt-4o", max_tokens=100, messages=messages) as stream:
        assert stream.get_final_message().stop_reason == "end_turn"
    sent = gateway.fake.last()
    assert sent.json["stream"] is True and sent.json["messages"][0]["content"] == expected
    # To Claude the blocks go as the client sent them.
    claude.messages.create(model=CLAUDE, max_tokens=100, messages=messages)
    assert gateway.fake.last().json["messages"] == messages


def test_a_pdf_by_url_reaches_openrouter_but_not_openai(gateway: GatewaySetup) -> None:
    claude = gateway.anthropic()
    messages = _user(
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "text", "text": "Summarize."},
    )
    claude.messages.create(model="anthropic/claude-sonnet-4", max_tokens=100, messages=messages)
    sent = gateway.fake.last()
    assert sent.path == "/api/v1/chat/completions"
    assert sent.json["messages"][0]["content"][0] == {
        "type": "file",
        "file": {"filename": "document.pdf", "file_data": "https://example.com/a.pdf"},
    }
    before = len(gateway.fake.received)
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model="gpt-4o", max_tokens=100, messages=messages)
    body: Any = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0].source.url" in body["error"]["message"]
    assert len(gateway.fake.received) == before


def test_file_ids_and_citations_do_not_cross_providers(gateway: GatewaySetup) -> None:
    client, claude = gateway.openai(), gateway.anthropic()
    before = len(gateway.fake.received)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=CLAUDE, messages=_chat_file(file_id="file-abc123"))
    assert (err.value.param, err.value.code) == (
        "messages[0].content[1].file.file_id",
        "unsupported_for_provider",
    )
    assert "file ids belong to one provider's Files API" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(
            model=CLAUDE,
            input=[{"role": "user", "content": [{"type": "input_file", "file_id": "file-abc123"}]}],
        )
    assert (err.value.param, err.value.code) == ("input[0].content[0].file_id", "unsupported_for_provider")
    for block, field in (
        ({"type": "document", "source": {"type": "file", "file_id": "file_011"}}, "source.file_id"),
        ({**CLAUDE_DOCUMENT, "citations": {"enabled": True}}, "citations"),
    ):
        with pytest.raises(anthropic.BadRequestError) as claude_err:
            claude.messages.create(
                model="gpt-4o", max_tokens=100, messages=_user(block, {"type": "text", "text": "Summarize."})
            )
        body: Any = claude_err.value.body
        assert f"messages[0].content[0].{field}" in body["error"]["message"]
    assert len(gateway.fake.received) == before


def test_the_optimizer_leaves_documents_as_sent(gateway: GatewaySetup) -> None:
    """Aggressive optimization compacts an older turn's prose, never a document's text or bytes."""
    prose = long_document().body["input"][0]["content"]
    messages = [
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "title": "Offsite",
                    "source": {"type": "text", "media_type": "text/plain", "data": prose},
                },
                CLAUDE_DOCUMENT,
                {"type": "text", "text": prose},
            ],
        },
        {"role": "assistant", "content": "Read."},
        {"role": "user", "content": "Anything else?"},
        {"role": "assistant", "content": "No."},
        {"role": "user", "content": "What is the rollback budget?"},
    ]
    gateway.anthropic().messages.create(
        model="gpt-4o",
        max_tokens=100,
        messages=messages,  # type: ignore[arg-type]
        extra_body={"trex": {"optimize": {"mode": "aggressive"}}},
    )
    first = gateway.fake.last().json["messages"][0]["content"]
    assert first[0] == {"type": "text", "text": f"# Offsite\n\n{prose}"}
    assert first[1] == {"type": "file", "file": {"filename": "report.pdf", "file_data": PDF_URL}}
    assert len(first[2]["text"]) < len(prose)  # the same prose as a text block was compacted
    assert json.dumps(first).count(PDF) == 1


NO_VISION = '[[models]]\nname = "gpt-4o-mini"\nprovider = "openai"\ncapabilities = ["tools", "json"]\n'
"""The cheapest catalog model, made one that cannot read images (or PDFs)."""


@pytest.fixture
def smart(make_worker: Callable[..., InProcessWorker]) -> Iterator[tuple[openai.OpenAI, anthropic.Anthropic]]:
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY}, extra=NO_VISION)
    keys = worker.app[GATEWAY].keys
    record, token = worker.call(keys.create("smart"))
    for provider in ("openai", "anthropic"):
        worker.call(keys.bind(record.id, provider, UPSTREAM_KEYS[provider]))
    with (
        openai.OpenAI(api_key=token, base_url=worker.url + "/v1", max_retries=0) as client,
        anthropic.Anthropic(api_key=token, base_url=worker.url, max_retries=0) as claude,
    ):
        yield client, claude


def test_smart_auto_sends_a_pdf_only_to_a_model_that_reads_it(
    smart: tuple[openai.OpenAI, anthropic.Anthropic], fake_upstream: FakeUpstream
) -> None:
    """A PDF needs a model that reads images (PDF pages are read as text and images); a text document does not,
    and now goes to any provider; what only one provider can take (a file id, citations, a PDF by URL for a
    Messages client) goes to a model of that provider."""
    client, claude = smart

    def chosen(raw: Any) -> str:
        return str(raw.headers["X-Trex-Upstream-Model"])

    hi: Any = [{"role": "user", "content": "hi"}]
    assert (
        chosen(client.chat.completions.with_raw_response.create(model="smart-auto", messages=hi))
        == "gpt-4o-mini"
    )
    pdf = _chat_file(filename="report.pdf", file_data=PDF_URL)
    assert (
        chosen(client.chat.completions.with_raw_response.create(model="smart-auto", messages=pdf))
        == "gpt-5.4-nano"
    )
    file_id = _chat_file(file_id="file-abc123")
    raw = client.chat.completions.with_raw_response.create(model="smart-auto", messages=file_id)
    assert raw.headers["X-Trex-Upstream-Provider"] == "openai"

    def messages_to(*blocks: Any) -> str:
        raw = claude.messages.with_raw_response.create(
            model="smart-auto",
            max_tokens=100,
            messages=_user(*blocks, {"type": "text", "text": "Summarize."}),
        )
        return chosen(raw)

    text = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "Revenue grew."},
    }
    assert messages_to(text) == "gpt-4o-mini"
    assert messages_to(CLAUDE_DOCUMENT) == "gpt-5.4-nano"
    assert fake_upstream.last().json["messages"][0]["content"][0]["type"] == "file"
    assert messages_to({**text, "citations": {"enabled": True}}) == "claude-haiku-4-5"
    before = len(fake_upstream.received)
    url = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    assert messages_to(url) == "claude-haiku-4-5"
    assert [r.path for r in fake_upstream.received[before:]] == ["/v1/messages"]  # no OpenAI model was tried


def test_a_large_pdf_is_counted_by_its_pages_not_its_base64(gateway: GatewaySetup) -> None:
    """A 3-page PDF of 400 KB is some 9,000 tokens to the model; counted as base64 text it was ~280,000, past
    every context window but the largest, so smart-auto could not pick the cheapest model that reads PDFs.
    The file reaches the model byte-identical."""
    pages = b"".join(b"%d 0 obj << /Type /Page >> endobj\n" % i for i in (2, 3, 4))
    raw = b"%PDF-1.7\n" + pages + random.Random(7).randbytes(300_000) + b"%%EOF"
    data = "data:application/pdf;base64," + base64.b64encode(raw).decode()
    messages = _chat_file(filename="scan.pdf", file_data=data)
    reply = gateway.openai().chat.completions.with_raw_response.create(model="smart-auto", messages=messages)
    assert reply.headers["X-Trex-Upstream-Model"] == "gpt-4o-mini"
    assert 3 * PAGE_TOKENS < int(reply.headers["X-Trex-Original-Tokens"]) < 3 * PAGE_TOKENS + 100
    assert gateway.fake.last().json["messages"][0]["content"][1]["file"]["file_data"] == data
