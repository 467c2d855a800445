"""Documents across formats: OpenAI chat `file` parts and Responses `input_file` parts ⇄ Anthropic `document`
blocks, checked against the official SDKs' own request types."""

from __future__ import annotations

import base64
from typing import Any

import pydantic
import pytest
from anthropic.types import DocumentBlockParam
from openai.types.chat import ChatCompletionContentPartParam

from adapters import anthropic as messages
from adapters import openai_chat as chat
from adapters import openai_responses as responses
from adapters.base import Document, Text, ToolResult, TranslationError

PDF = base64.b64encode(b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n%%EOF").decode()
PDF_URL = f"data:application/pdf;base64,{PDF}"
DOCUMENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(DocumentBlockParam)
CHAT_PART: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ChatCompletionContentPartParam)
TEXT = {"type": "text", "media_type": "text/plain", "data": "x"}


def _chat_body(*content: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": list(content)}]}


def _responses_body(*content: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-6", "input": [{"role": "user", "content": list(content)}]}


def _messages_body(*content: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": list(content)}]}


def _to_claude(req: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = messages.encode_request(req, upstream_model="claude-sonnet-4-6")["messages"]
    for block in sent[0]["content"]:
        if block["type"] == "document":
            DOCUMENT.validate_python(block)
    return sent


def _to_chat(body: dict[str, Any], flavor: Any = "openai") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = chat.encode_request(
        messages.decode_request(body), upstream_model="gpt-4o", flavor=flavor
    )["messages"]
    for m in sent:
        if isinstance(m["content"], list):
            for part in m["content"]:
                CHAT_PART.validate_python(part)
    return sent


# ---- OpenAI → Claude --------------------------------------------------------------------------------------


def test_a_chat_file_part_is_a_claude_pdf_document_titled_by_its_filename() -> None:
    req = chat.decode_request(
        _chat_body(
            {"type": "text", "text": "Summarize."},
            {"type": "file", "file": {"filename": "report.pdf", "file_data": PDF_URL}},
            {"type": "file", "file": {"file_data": PDF_URL}, "cache_control": {"type": "ephemeral"}},
        )
    )
    assert req.messages[0].content[1] == Document(
        media_type="application/pdf",
        data=PDF,
        title="report.pdf",
        where="messages[0].content[1].file.file_data",
    )
    sent = _to_claude(req)[0]["content"]
    assert sent[1] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        "title": "report.pdf",
    }
    assert sent[2] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        "cache_control": {"type": "ephemeral"},
    }


def test_responses_input_files_are_claude_documents_by_base64_url_or_text() -> None:
    text = base64.b64encode("Zürich, 3 °C".encode()).decode()
    req = responses.decode_request(
        _responses_body(
            {"type": "input_file", "filename": "a.pdf", "file_data": PDF_URL, "detail": "high"},
            {"type": "input_file", "file_url": "https://example.com/b.pdf"},
            {"type": "input_file", "filename": "notes.txt", "file_data": f"data:text/plain;base64,{text}"},
            {"type": "input_text", "text": "Compare them."},
        )
    )
    sent = _to_claude(req)[0]["content"]
    assert sent[0] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        "title": "a.pdf",
    }
    assert sent[1] == {"type": "document", "source": {"type": "url", "url": "https://example.com/b.pdf"}}
    assert sent[2] == {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "Zürich, 3 °C"},
        "title": "notes.txt",
    }
    assert sent[3] == {"type": "text", "text": "Compare them."}


def test_files_claude_cannot_read_are_refused_naming_the_clients_field() -> None:
    docx = "data:application/vnd.openxmlformats-officedocument.wordprocessingml.document;base64,UEsDBA=="
    req = responses.decode_request(
        _responses_body({"type": "input_file", "filename": "a.docx", "file_data": docx})
    )
    with pytest.raises(TranslationError) as err:
        _to_claude(req)
    assert err.value.param == "input[0].content[0].file_data" and err.value.unsupported
    assert "application/pdf" in str(err.value)
    binary = base64.b64encode(b"\xff\xfe").decode()
    req = chat.decode_request(
        _chat_body({"type": "file", "file": {"file_data": f"data:text/plain;base64,{binary}"}})
    )
    with pytest.raises(TranslationError) as err:
        _to_claude(req)
    assert err.value.param == "messages[0].content[0].file.file_data"


@pytest.mark.parametrize(
    ("body", "decode", "param"),
    [
        (_chat_body({"type": "file", "file": {"file_id": "file-abc"}}), chat.decode_request, "file.file_id"),
        (_chat_body({"type": "file", "file": {"filename": "a.pdf"}}), chat.decode_request, "file.file_data"),
        (
            _chat_body({"type": "file", "file": {"file_data": "JVBERi0="}}),
            chat.decode_request,
            "file.file_data",
        ),
        (_chat_body({"type": "file", "file": "x"}), chat.decode_request, "file"),
        (
            _chat_body({"type": "file", "file": {"file_data": PDF_URL, "filename": 3}}),
            chat.decode_request,
            "file.filename",
        ),
        (_responses_body({"type": "input_file", "file_id": "file-abc"}), responses.decode_request, "file_id"),
        (
            _responses_body({"type": "input_image", "file_id": "file-abc"}),
            responses.decode_request,
            "file_id",
        ),
        (_responses_body({"type": "input_file"}), responses.decode_request, "file_data"),
        (_responses_body({"type": "input_file", "file_url": ""}), responses.decode_request, "file_url"),
    ],
)
def test_bad_or_foreign_files_are_errors_naming_the_field(
    body: dict[str, Any], decode: Any, param: str
) -> None:
    with pytest.raises(TranslationError) as err:
        decode(body)
    assert err.value.param == f"{'messages' if 'messages' in body else 'input'}[0].content[0].{param}"
    assert err.value.unsupported == param.endswith("file_id")
    if err.value.unsupported:
        assert "file ids belong to one provider's Files API" in str(err.value)


# ---- Claude documents → OpenAI chat -----------------------------------------------------------------------


def test_a_claude_pdf_document_is_a_chat_file_part_named_by_its_title() -> None:
    pdf = {"type": "base64", "media_type": "application/pdf", "data": PDF}
    sent = _to_chat(
        _messages_body(
            {"type": "document", "source": pdf, "title": "Q3 report", "context": "From the finance team."},
            {"type": "document", "source": pdf, "citations": {"enabled": False}},
            {"type": "text", "text": "Summarize."},
        )
    )
    assert sent == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "From the finance team."},
                {"type": "file", "file": {"filename": "Q3 report.pdf", "file_data": PDF_URL}},
                {"type": "file", "file": {"filename": "document.pdf", "file_data": PDF_URL}},
                {"type": "text", "text": "Summarize."},
            ],
        }
    ]


def test_a_claude_pdf_by_url_reaches_openrouter_but_no_other_chat_upstream() -> None:
    body = _messages_body({"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}})
    part = _to_chat(body, "openrouter")[0]["content"][0]
    assert part == {
        "type": "file",
        "file": {"filename": "document.pdf", "file_data": "https://example.com/a.pdf"},
    }
    for flavor in ("openai", "local"):
        with pytest.raises(TranslationError) as err:
            _to_chat(body, flavor)
        assert err.value.param == "messages[0].content[0].source.url" and err.value.unsupported


def test_claude_text_and_content_documents_are_text_headed_by_their_title() -> None:
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    sent = _to_chat(
        _messages_body(
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": "Line 1\nLine 2"},
            },
            {
                "type": "document",
                "title": "Notes",
                "source": {"type": "text", "media_type": "text/plain", "data": "Keep it short."},
            },
            {
                "type": "document",
                "title": "Deck",
                "source": {
                    "type": "content",
                    "content": [{"type": "text", "text": "Slide 1"}, {"type": "image", "source": png}],
                },
            },
            {"type": "document", "source": {"type": "content", "content": "Plain."}},
            {"type": "text", "text": "What do they say?"},
        )
    )
    assert sent[0]["content"] == [
        {"type": "text", "text": "Line 1\nLine 2"},
        {"type": "text", "text": "# Notes\n\nKeep it short."},
        {"type": "text", "text": "# Deck"},
        {"type": "text", "text": "Slide 1"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "text", "text": "Plain."},
        {"type": "text", "text": "What do they say?"},
    ]
    # Text only: one content string, as a chat client would send it.
    only_text = _to_chat(
        _messages_body(
            {
                "type": "document",
                "title": "Notes",
                "source": {"type": "text", "media_type": "text/plain", "data": "x"},
            }
        )
    )
    assert only_text[0]["content"] == "# Notes\n\nx"


@pytest.mark.parametrize(
    ("block", "param", "unsupported"),
    [
        ({"type": "document", "source": {"type": "file", "file_id": "file_011"}}, "source.file_id", True),
        ({"type": "image", "source": {"type": "file", "file_id": "file_011"}}, "source.file_id", True),
        ({"type": "document", "source": TEXT, "citations": {"enabled": True}}, "citations", True),
        ({"type": "document", "source": TEXT, "citations": True}, "citations", False),
        ({"type": "document"}, "source", False),
        ({"type": "document", "source": {"type": "pdf"}}, "source.type", False),
        ({"type": "document", "source": {"type": "base64", "data": PDF}}, "source", False),
        ({"type": "document", "source": {"type": "url"}}, "source.url", False),
        ({"type": "document", "source": {"type": "text", "data": 1}}, "source.data", False),
        ({"type": "document", "source": {"type": "content", "content": 1}}, "source.content", False),
        (
            {"type": "document", "source": {"type": "content", "content": [{"type": "document"}]}},
            "source.content[0].type",
            False,
        ),
        ({"type": "document", "source": TEXT, "title": 5}, "title", False),
        ({"type": "document", "source": TEXT, "cache_control": "yes"}, "cache_control", False),
    ],
)
def test_claude_documents_that_cannot_cross_are_errors_naming_the_field(
    block: dict[str, Any], param: str, unsupported: bool
) -> None:
    with pytest.raises(TranslationError) as err:
        messages.decode_request(_messages_body({"type": "text", "text": "Read this."}, block))
    assert (err.value.param, err.value.unsupported) == (f"messages[0].content[1].{param}", unsupported)
    if param == "source.file_id":
        assert "file ids belong to one provider's Files API" in str(err.value)


# ---- tool results ---------------------------------------------------------------------------------------


def test_documents_in_tool_results_cross_both_ways() -> None:
    """A tool result's document reaches Claude in its tool_result; a chat upstream's tool message carries text
    only, so the document follows it in a user message (as images do)."""
    body = _messages_body()
    body["messages"] = [
        {"role": "user", "content": "Fetch the invoice."},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "fetch", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [
                        {"type": "text", "text": "Here it is."},
                        {
                            "type": "document",
                            "title": "invoice.pdf",
                            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                        },
                    ],
                }
            ],
        },
    ]
    sent = _to_chat(body)
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "Here it is."}
    assert sent[3] == {
        "role": "user",
        "content": [{"type": "file", "file": {"filename": "invoice.pdf", "file_data": PDF_URL}}],
    }

    req = responses.decode_request(
        {
            "model": "claude-sonnet-4-6",
            "input": [
                {"role": "user", "content": "Fetch the invoice."},
                {"type": "function_call", "call_id": "c1", "name": "fetch", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [{"type": "input_file", "filename": "invoice.pdf", "file_data": PDF_URL}],
                },
            ],
        }
    )
    result = req.messages[2].content[0]
    assert isinstance(result, ToolResult) and isinstance(result.content[0], Document)
    claude = messages.encode_request(req, upstream_model="claude-sonnet-4-6")["messages"]
    assert claude[2]["content"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "invoice.pdf",
        }
    ]


def test_canonical_parts_of_a_content_document_keep_its_cache_breakpoint() -> None:
    req = messages.decode_request(
        _messages_body(
            {
                "type": "document",
                "cache_control": {"type": "ephemeral"},
                "source": {
                    "type": "content",
                    "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
                },
            }
        )
    )
    assert req.messages[0].content == [Text("A"), Text("B", {"type": "ephemeral"})]
