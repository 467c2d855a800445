"""Documents (PDFs, plain text) between OpenAI's file parts and Anthropic's document blocks.

Both providers read PDFs; they only name them differently. An OpenAI chat `file` part
(`{"file": {"file_data": "data:application/pdf;base64,…", "filename"}}`) or Responses `input_file`
(`file_data`, `file_url`, `filename`) is a canonical `Document`, and so is an Anthropic `document` block
with a `base64` or `url` source (its `title` is the filename). An Anthropic `text` or `content` source is
text the model reads, so it becomes text (and images): the title as a heading line, then the document. A
`context` (what the client says about the document) is a text part before it.

What cannot cross: a file id (`file_id`, an Anthropic `file` source) names an upload to one provider's Files
API, which another provider cannot read; and Anthropic citations, which no other provider gives back. Both are
400s naming the client's field (`unsupported_for_provider`), never dropped.
"""

from __future__ import annotations

import binascii
from typing import Any, Final, Literal

from .base import CacheControl, Document, Image, Text, TranslationError, parse_data_url

__all__ = ["file_id_refused", "from_anthropic", "from_openai", "to_anthropic", "to_chat"]

PDF: Final = "application/pdf"
PLAIN_TEXT: Final = "text/plain"
_FILE_IDS: Final = (
    "file ids belong to one provider's Files API, and the model this request goes to is another provider's"
)


def file_id_refused(param: str, instead: str) -> TranslationError:
    """The 400 for a file id (`param`) sent to another provider than the one whose Files API holds it."""
    return TranslationError(f"`{param}`: {_FILE_IDS}; {instead}.", param, unsupported=True)


def _optional_str(obj: dict[str, Any], key: str, param: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise TranslationError(f"`{param}.{key}` must be a string.", f"{param}.{key}")
    return value


# ---- OpenAI → canonical --------------------------------------------------------------------------------


def from_openai(spec: dict[str, Any], param: str, cc: CacheControl | None, *, responses: bool) -> Document:
    """A chat `file` part's `file` object, or a Responses `input_file` part (`responses`: `file_url` too),
    at `param` (`messages[1].content[0].file`, `input[0].content[1]`)."""
    if spec.get("file_id") is not None:
        raise file_id_refused(
            f"{param}.file_id", "send the file's content as `file_data` (a base64 data URL)"
        )
    title = _optional_str(spec, "filename", param) or None
    data = spec.get("file_data")
    url = spec.get("file_url") if responses else None
    if data is None and url is not None:
        if not isinstance(url, str) or not url:
            raise TranslationError(f"`{param}.file_url` must be a non-empty string.", f"{param}.file_url")
        return Document(url=url, title=title, cache_control=cc, where=f"{param}.file_url")
    at = f"{param}.file_data"
    if not isinstance(data, str) or not data:
        needs = (
            "`file_data` (a base64 data URL) or `file_url`"
            if responses
            else "`file_data` (a base64 data URL)"
        )
        raise TranslationError(f"`{param}` needs {needs}.", at)
    inline = parse_data_url(data)
    if inline is None:
        raise TranslationError(f"`{at}` must be a base64 data URL (data:application/pdf;base64,…).", at)
    return Document(media_type=inline[0], data=inline[1], title=title, cache_control=cc, where=at)


# ---- Anthropic → canonical -----------------------------------------------------------------------------


def from_anthropic(
    block: dict[str, Any], param: str, cc: CacheControl | None
) -> list[Text | Image | Document]:
    """The parts a Messages `document` block at `param` stands for (see the module doc)."""
    citations = block.get("citations")
    if citations is not None:
        if not isinstance(citations, dict):
            raise TranslationError("`citations` must be an object", f"{param}.citations")
        if citations.get("enabled") is True:
            raise TranslationError(
                "citations are only given by Claude: another provider's answer would have none for the "
                "client to read. Leave out `citations` (or set `enabled` to false), or use a Claude model.",
                f"{param}.citations",
                unsupported=True,
            )
    title = _optional_str(block, "title", param) or None
    context = _optional_str(block, "context", param)
    source = block.get("source")
    if not isinstance(source, dict):
        raise TranslationError("`source` must be an object", f"{param}.source")
    at = f"{param}.source"
    parts: list[Text | Image | Document] = [Text(context)] if context else []
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise TranslationError("a base64 source needs `media_type` and `data` strings", at)
        doc = Document(
            media_type=media_type.lower(), data=data, title=title, cache_control=cc, where=f"{at}.data"
        )
        parts.append(doc)
    elif kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise TranslationError("`url` must be a non-empty string", f"{at}.url")
        parts.append(Document(url=url, title=title, cache_control=cc, where=f"{at}.url"))
    elif kind == "text":
        data = source.get("data")
        if not isinstance(data, str):
            raise TranslationError("`data` must be a string", f"{at}.data")
        parts.append(Text(_headed(title, data), cc))
    elif kind == "content":
        parts.extend(_content_source(source.get("content"), f"{at}.content", title, cc))
    elif kind == "file":
        raise file_id_refused(f"{at}.file_id", "send the document inline (a base64 or text source) instead")
    else:
        raise TranslationError(
            f"document source type {kind!r} is not supported; use 'base64', 'url', 'text' or 'content'",
            f"{at}.type",
        )
    return parts


def _headed(title: str | None, text: str) -> str:
    return f"# {title}\n\n{text}" if title else text


def _content_source(
    content: Any, param: str, title: str | None, cc: CacheControl | None
) -> list[Text | Image]:
    """A `content` source's text and image blocks (a string is one text block); the title heads them."""
    parts: list[Text | Image] = [Text(f"# {title}")] if title else []
    if isinstance(content, str):
        parts.append(Text(content))
    elif isinstance(content, list):
        for k, item in enumerate(content):
            where = f"{param}[{k}]"
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text" and isinstance(item.get("text"), str):
                parts.append(Text(item["text"], _cache_control(item, where)))
            elif kind == "image" and isinstance(item.get("source"), dict):
                parts.append(_image(item["source"], where, _cache_control(item, where)))
            else:
                raise TranslationError("a content source holds text and image blocks only", f"{where}.type")
    else:
        raise TranslationError("`content` must be a string or a list of blocks", param)
    kept = [p for p in parts if not isinstance(p, Text) or p.text]
    last = kept[-1] if kept else None
    if cc is not None and isinstance(last, Text | Image) and last.cache_control is None:
        last.cache_control = cc  # the document's breakpoint ends where the document does
    return kept


def _cache_control(block: dict[str, Any], param: str) -> CacheControl | None:
    cc = block.get("cache_control")
    if cc is not None and not isinstance(cc, dict):
        raise TranslationError("`cache_control` must be an object", f"{param}.cache_control")
    return cc


def _image(source: dict[str, Any], param: str, cc: CacheControl | None) -> Image:
    if source.get("type") == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if isinstance(media_type, str) and isinstance(data, str):
            return Image(media_type=media_type, data=data, cache_control=cc)
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        return Image(url=source["url"], cache_control=cc)
    raise TranslationError(
        "an image needs a base64 source (`media_type`, `data`) or a `url`", f"{param}.source"
    )


# ---- canonical → providers -----------------------------------------------------------------------------


def to_anthropic(doc: Document, param: str) -> dict[str, Any]:
    """An Anthropic `document` block: a PDF by base64 or URL source, plain text as a text source."""
    source: dict[str, Any]
    if doc.url is not None:
        source = {"type": "url", "url": doc.url}
    elif doc.media_type == PDF:
        source = {"type": "base64", "media_type": PDF, "data": doc.data or ""}
    elif doc.media_type == PLAIN_TEXT:
        source = {"type": "text", "media_type": PLAIN_TEXT, "data": _plain_text(doc, param)}
    else:
        raise TranslationError(
            f"files of type {doc.media_type!r} cannot be sent to Claude; send application/pdf or text/plain",
            doc.where or param,
            unsupported=True,
        )
    block: dict[str, Any] = {"type": "document", "source": source}
    if doc.title:
        block["title"] = doc.title
    if doc.cache_control is not None:
        block["cache_control"] = doc.cache_control
    return block


def _plain_text(doc: Document, param: str) -> str:
    try:
        return binascii.a2b_base64(doc.data or "", strict_mode=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise TranslationError("a text/plain file must be base64 of UTF-8 text", doc.where or param) from None


def to_chat(doc: Document, flavor: Literal["openai", "openrouter", "local"], param: str) -> dict[str, Any]:
    """A chat `file` part. Chat Completions takes a file inline only; OpenRouter also takes a PDF's URL in
    `file_data` (its documented extension)."""
    if doc.url is not None:
        if flavor != "openrouter":
            raise TranslationError(
                "a document by URL cannot be sent to this model: Chat Completions takes files inline only. "
                "Send the PDF as base64 data, or use a Claude model.",
                doc.where or param,
                unsupported=True,
            )
        data = doc.url
    else:
        data = f"data:{doc.media_type or PDF};base64,{doc.data or ''}"
    return {"type": "file", "file": {"filename": _filename(doc), "file_data": data}}


def _filename(doc: Document) -> str:
    """The document's title as a file name with its type's extension (a chat file part is a PDF)."""
    extension = ".txt" if doc.media_type == PLAIN_TEXT else ".pdf"
    if not doc.title:
        return f"document{extension}"
    return doc.title if doc.title.lower().endswith(extension) else doc.title + extension
