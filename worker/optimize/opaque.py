"""Images and files in a request: bytes the optimizer never reads or changes, counted by an estimate.

A provider reads an image as pixels and a PDF as pages (their text and an image of each), not as the
characters of their base64: counted as text, a 1 MB PDF would be some 900,000 tokens, past the context
window of every model smart-auto could pick, and a photo would count as a long document. So the report's
count (`pipeline.measure`, which smart-auto and the long-context quota read) leaves their payloads out of the
text it tokenizes and adds an estimate for each instead:

- an image: `IMAGE_TOKENS`, about what Claude bills an image of the ~1.15 megapixels it reads unscaled
  (OpenAI's high-detail images cost less);
- a PDF: `PAGE_TOKENS` a page (Claude's documentation gives 1,500-3,000 tokens of text a page, plus the page
  as an image), its pages counted from the file's page objects, else guessed from its size; a PDF by URL or
  file id, whose size is unknown here, as one page;
- another inline file (plain text, sent as a Responses `input_file`): a token per 4 bytes, as for text.

Text the model reads as text (an Anthropic document with a `text` or `content` source, titles, file names) is
counted as text.
"""

from __future__ import annotations

import binascii
import re
from typing import Any, Final

from adapters.documents import PDF

__all__ = ["IMAGE_TOKENS", "PAGE_TOKENS", "PAYLOAD_PART_TYPES", "without_payloads"]

PAYLOAD_PART_TYPES: Final = ("image", "image_url", "input_image", "file", "input_file", "document")
"""The content part types that can carry an image or file payload (`_stand_in` says which do)."""

IMAGE_TOKENS: Final = 1_600
PAGE_TOKENS: Final = 3_000
_BYTES_PER_PAGE: Final = 50_000
"""A page's share of a PDF whose page objects are compressed out of sight (object streams)."""
_PAGE: Final = re.compile(rb"/Type\s*/Page(?![A-Za-z])")


def without_payloads(value: Any) -> tuple[Any, int]:
    """`value` (a request's content fields) with every image and file payload emptied, and the tokens
    estimated for them. What changes is copied; the rest is shared with `value`, which is never modified."""
    if isinstance(value, list):
        out: list[Any] | None = None
        total = 0
        for i, item in enumerate(value):
            new, tokens = without_payloads(item)
            total += tokens
            if new is not item:
                out = out if out is not None else list(value)
                out[i] = new
        return (value if out is None else out), total
    if isinstance(value, dict):
        stand_in = _stand_in(value)
        if stand_in is not None:
            return stand_in
        copy: dict[str, Any] | None = None
        total = 0
        for key, item in value.items():
            if isinstance(item, list | dict):
                new, tokens = without_payloads(item)
                total += tokens
                if new is not item:
                    copy = copy if copy is not None else dict(value)
                    copy[key] = new
        return (value if copy is None else copy), total
    return value, 0


def _stand_in(block: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    """An image or file part without its payload, and its estimate; None for anything else."""
    kind = block.get("type")
    if kind == "image_url" or (kind == "input_image" and ("image_url" in block or "file_id" in block)):
        return {"type": kind}, IMAGE_TOKENS
    if kind == "image" and isinstance(block.get("source"), dict):
        return {"type": kind}, IMAGE_TOKENS
    if kind == "file" and isinstance(block.get("file"), dict):  # chat
        return {**block, "file": {}}, _file_tokens(block["file"].get("file_data"), None)
    if kind == "input_file":  # Responses
        return {"type": kind}, _file_tokens(block.get("file_data"), None)
    if kind == "document" and isinstance(block.get("source"), dict):  # Messages
        source = block["source"]
        if source.get("type") in ("text", "content"):
            return None  # text the model reads as text (its images are found inside)
        data = source.get("data") if source.get("type") == "base64" else None
        return {**block, "source": {}}, _file_tokens(data, source.get("media_type"))
    return None


def _file_tokens(data: Any, media_type: Any) -> int:
    """Tokens for an inline file (a base64 data URL, or base64 with its `media_type`); one page when there is
    no inline content (a URL, a file id)."""
    if not isinstance(data, str) or not data:
        return PAGE_TOKENS
    if data[:5].lower() == "data:":
        header, _, data = data.partition(",")
        media_type = header[5:].split(";", 1)[0].strip().lower()
    try:
        raw = binascii.a2b_base64(data)
    except binascii.Error:
        raw = b""
    if media_type == PDF or raw.startswith(b"%PDF"):
        pages = len(_PAGE.findall(raw)) or (1 + len(raw) // _BYTES_PER_PAGE)
        return pages * PAGE_TOKENS
    return max(1, len(raw) // 4)
