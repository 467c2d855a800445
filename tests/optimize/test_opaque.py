"""Images and files are counted by estimate, not as their base64 text, in every format; the optimizer
forwards them byte-identical."""

from __future__ import annotations

import base64
import copy
import json
import random
from typing import Any

from worker.optimize.opaque import IMAGE_TOKENS, PAGE_TOKENS, without_payloads
from worker.optimize.pipeline import Options, measure, optimize


def _bytes(n: int) -> bytes:
    """Incompressible bytes, the same every run."""
    return random.Random(n).randbytes(n)


def _pdf(pages: int, padding: int = 0) -> str:
    """Base64 of a PDF with `pages` page objects (and `padding` random bytes, as images in it would be)."""
    objects = b"".join(b"%d 0 obj << /Type /Page /Parent 1 0 R >> endobj\n" % (i + 2) for i in range(pages))
    raw = b"%%PDF-1.7\n1 0 obj << /Type /Pages /Count %d >> endobj\n" % pages + objects + _bytes(padding)
    return base64.b64encode(raw + b"%%EOF").decode()


PDF = _pdf(3, padding=300_000)
PNG = base64.b64encode(_bytes(200_000)).decode()
TEXT_PARTS = [{"type": "text", "text": "Compare them."}]


def _chat() -> dict[str, Any]:
    content = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PDF}"}},
        *TEXT_PARTS,
    ]
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}


def _responses() -> dict[str, Any]:
    content = [
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
        {"type": "input_file", "filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PDF}"},
        {"type": "input_text", "text": "Compare them."},
    ]
    return {"model": "gpt-4o", "input": [{"role": "user", "content": content}]}


def _messages() -> dict[str, Any]:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
        *TEXT_PARTS,
    ]
    return {
        "model": "claude-sonnet-4-6",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": content}],
    }


def test_images_and_pdfs_are_counted_by_estimate_in_every_format() -> None:
    """An image is IMAGE_TOKENS and a PDF PAGE_TOKENS a page, whatever the size of their base64 (counted as
    text they were some 450,000 tokens)."""
    for fmt, body in (("chat", _chat()), ("responses", _responses()), ("messages", _messages())):
        counted = measure(fmt, body)  # type: ignore[arg-type]
        assert IMAGE_TOKENS + 3 * PAGE_TOKENS < counted < IMAGE_TOKENS + 3 * PAGE_TOKENS + 100, fmt


def test_pdf_pages_are_counted_from_page_objects_else_guessed_from_size() -> None:
    def tokens(data: str) -> int:
        block = {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": data},
        }
        return without_payloads([block])[1]

    assert tokens(_pdf(1)) == PAGE_TOKENS
    assert tokens(_pdf(12, padding=10_000)) == 12 * PAGE_TOKENS
    compressed = base64.b64encode(b"%PDF-1.7\n" + _bytes(120_000)).decode()  # pages in object streams
    assert tokens(compressed) == 3 * PAGE_TOKENS
    # By URL or file id the size is unknown: one page. Plain text a token per 4 bytes.
    url: Any = [{"type": "input_file", "file_url": "https://example.com/a.pdf"}]
    assert without_payloads(url)[1] == PAGE_TOKENS
    text = base64.b64encode(b"x" * 4000).decode()
    plain: Any = [{"type": "input_file", "file_data": f"data:text/plain;base64,{text}"}]
    assert without_payloads(plain)[1] == 1000


def test_text_documents_are_counted_as_text_and_nothing_is_modified() -> None:
    words = "The rollback budget is thirty minutes. " * 200
    body: Any = {
        "system": "x",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": words},
                    },
                    {
                        "type": "document",
                        "source": {
                            "type": "content",
                            "content": [
                                {"type": "text", "text": words},
                                {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}},
                            ],
                        },
                    },
                ],
            }
        ],
    }
    before = copy.deepcopy(body)
    stripped, estimated = without_payloads(body)
    assert estimated == IMAGE_TOKENS and body == before
    assert json.dumps(stripped).count(words) == 2
    assert measure("messages", body) > 2 * 1_000


def test_the_optimizer_forwards_images_and_files_byte_identical() -> None:
    old_turns: Any = [
        {"role": "assistant", "content": "Noted. " * 50},
        {"role": "user", "content": "Anything else to add? " * 50},
        {"role": "assistant", "content": "Nothing more. " * 50},
        {"role": "user", "content": "Compare them again."},
    ]
    for fmt, body in (("chat", _chat()), ("responses", _responses()), ("messages", _messages())):
        key = "input" if fmt == "responses" else "messages"
        body[key].extend(copy.deepcopy(old_turns))
        first = json.dumps(body[key][0])
        report = optimize(fmt, body, Options(mode="aggressive", protect_recent_turns=0))  # type: ignore[arg-type]
        assert json.dumps(body[key][0]) == first
        assert report.original_tokens < 20_000
