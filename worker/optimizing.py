"""Glue between HTTP and the optimizer: options from the request, running it, and the savings headers.

Mode precedence, highest first: `trex.optimize.mode` in the body, the `X-Trex-Optimize` header, the key's
own default, then `OPTIMIZE_MODE` from the config. Large bodies are optimized on a worker thread (tiktoken
releases the GIL while encoding), so one 100k-token request never stalls every other request's loop.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import secrets
from collections.abc import Mapping
from typing import Any

from .errors import InvalidRequestError
from .headernames import (
    X_SESSION_ID,
    X_TREX_OPTIMIZE,
    X_TREX_OPTIMIZED_TOKENS,
    X_TREX_ORIGINAL_TOKENS,
    X_TREX_SAVED_TOKENS,
    X_TREX_SAVINGS_PERCENT,
    X_TREX_SESSION_ID,
    X_TREX_SESSION_REOPTIMIZED,
    X_TREX_SESSION_REPLAYED,
)
from .optimize.base import MODES, Mode
from .optimize.pipeline import PROFILES, Options, Report, measure, optimize
from .optimize.segments import Format

_THREAD_THRESHOLD_BYTES = 64 * 1024
_SESSION_ID_MAX = 1024


def resolve_options(
    trex: Any,
    headers: Mapping[str, str],
    default_mode: str,
    default_turns: int,
    key_mode: str | None = None,
    profile: str | None = None,
    encoding: str = "o200k_base",
    profile_from: str = "compression_model",
) -> Options:
    """Validated optimizer options for one request (400 naming the field on a bad value; `profile_from`: where
    the client gave `profile`, a body field, a header or a command-line option). `trex.optimize` may name the
    profile too (`compression_model`), and then overrides `profile`, as its `mode` overrides the header's."""
    mode: Any = key_mode or default_mode
    header = headers.get(X_TREX_OPTIMIZE)
    if header:
        mode = header.strip().lower()
        if mode not in MODES:
            raise InvalidRequestError(
                f"X-Trex-Optimize must be one of {', '.join(MODES)}, got {header!r}.", param="X-Trex-Optimize"
            )
    turns = default_turns
    if trex is not None:
        if not isinstance(trex, dict):
            raise InvalidRequestError("'trex' must be an object.", param="trex")
        opt = trex.get("optimize")
        if opt is not None:
            if not isinstance(opt, dict):
                raise InvalidRequestError("'trex.optimize' must be an object.", param="trex.optimize")
            if "mode" in opt:
                mode = opt["mode"]
                if mode not in MODES:
                    raise InvalidRequestError(
                        f"trex.optimize.mode must be one of {', '.join(MODES)}.", param="trex.optimize.mode"
                    )
            if "compression_model" in opt:
                profile, profile_from = opt["compression_model"], "trex.optimize.compression_model"
            if "protect_recent_turns" in opt:
                turns = opt["protect_recent_turns"]
                if isinstance(turns, bool) or not isinstance(turns, int) or not 0 <= turns <= 1000:
                    raise InvalidRequestError(
                        "trex.optimize.protect_recent_turns must be an integer from 0 to 1000.",
                        param="trex.optimize.protect_recent_turns",
                    )
    if profile is not None and profile not in PROFILES:
        raise InvalidRequestError(
            f"{profile_from} must be one of {', '.join(PROFILES)}, got {profile!r}.",
            param=profile_from,
        )
    return _options(mode, turns, profile, encoding)


@functools.lru_cache(maxsize=256)
def _options(mode: Mode, turns: int, profile: str | None, encoding: str) -> Options:
    """One `Options` per combination in use (they are immutable): building the frozen dataclass costs about
    10k instructions (an `object.__setattr__` per field), which every request paid."""
    return Options(mode=mode, protect_recent_turns=turns, profile=profile, encoding=encoding)


def runs_inline(size_hint: int) -> bool:
    """Whether `run` optimizes a body of this size on the event loop: the caller may then call
    `optimize.pipeline.optimize` itself, without the coroutine."""
    return size_hint < _THREAD_THRESHOLD_BYTES


async def run(fmt: Format, body: dict[str, Any], options: Options, size_hint: int) -> Report:
    """Optimize `body` in place; off the event loop when it is large (`size_hint`: the body's bytes as read,
    decompressed; a chunked body has no Content-Length to go by)."""
    if size_hint >= _THREAD_THRESHOLD_BYTES:
        return await asyncio.to_thread(optimize, fmt, body, options)
    return optimize(fmt, body, options)


async def count_tokens(fmt: Format, body: dict[str, Any], encoding: str, size_hint: int) -> int:
    """The request's input tokens as sent (`measure`); off the event loop when it is large, like `run`."""
    if size_hint >= _THREAD_THRESHOLD_BYTES:
        return await asyncio.to_thread(measure, fmt, body, encoding)
    return measure(fmt, body, encoding)


def session_id(headers: Mapping[str, str]) -> tuple[str, bool]:
    """(the session id, whether the client chose it): the client's `X-Session-Id`, or a new one when it sent
    none (or an empty one). Any printable id up to 1024 characters is taken as it is (the KV key is its
    hash); a longer one, or one with a tab or another control character, is a 400 naming the header rather
    than quietly replaced by a new id every turn."""
    incoming = headers.get(X_SESSION_ID, "").strip()
    if incoming:
        if len(incoming) > _SESSION_ID_MAX:
            raise InvalidRequestError(
                f"X-Session-Id must be at most {_SESSION_ID_MAX} characters, got {len(incoming)}.",
                param="X-Session-Id",
            )
        if not incoming.isprintable():
            raise InvalidRequestError(
                "X-Session-Id must be printable characters only (no tab or other control character).",
                param="X-Session-Id",
            )
        return incoming, True
    # Sessions are stored per proxy key, so a new id only has to be unique: a random per-process prefix and
    # a counter, not a call into the OS's random source per request.
    return "%s%08x" % (_session_prefix, next(_session_counter)), False  # noqa: UP031 - cheaper than f"{n:08x}"


def _new_session_prefix() -> None:
    global _session_prefix
    _session_prefix = "sess_" + secrets.token_hex(8)


_session_prefix = ""
_new_session_prefix()
os.register_at_fork(after_in_child=_new_session_prefix)  # a forked worker must not repeat the parent's ids
_session_counter = itertools.count(1)


def savings_headers(report: Report, session: str) -> dict[str, str]:
    """`X-Trex-*` headers describing what optimization saved."""
    saved = report.saved_tokens
    # Nothing saved (optimization off, or nothing to take out) is the same "0.00" without formatting a float.
    percent = f"{100.0 * saved / report.original_tokens:.2f}" if saved and report.original_tokens else "0.00"
    return {
        X_TREX_ORIGINAL_TOKENS: str(report.original_tokens),
        X_TREX_OPTIMIZED_TOKENS: str(report.optimized_tokens),
        X_TREX_SAVED_TOKENS: str(saved),
        X_TREX_SAVINGS_PERCENT: percent,
        X_TREX_SESSION_ID: session,
        # Leading messages replayed byte for byte from the session (0 when none), and whether the session's
        # context passed its budget and was optimized afresh this time (a new cached prefix starts).
        X_TREX_SESSION_REPLAYED: str(report.replayed_items),
        X_TREX_SESSION_REOPTIMIZED: "true" if report.reoptimized else "false",
    }


def validate_payload(fmt: Format, body: dict[str, Any]) -> None:
    """The minimum a `/v1/compress` payload needs (400 naming the field otherwise)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("'model' is required and must be a non-empty string.", param="model")
    if "tools" in body and not isinstance(body["tools"], list):
        raise InvalidRequestError("'tools' must be a list.", param="tools")
    if fmt == "responses":
        items = body["input"]
        if not isinstance(items, str | list) or not items:
            raise InvalidRequestError("'input' must be a non-empty string or list of items.", param="input")
        for i, item in enumerate(items if isinstance(items, list) else ()):
            if not isinstance(item, dict):
                raise InvalidRequestError(f"input[{i}] must be an object.", param=f"input[{i}]")
        return
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list.", param="messages")
    if fmt == "messages" and "system" in body and not _is_content(body["system"]):
        raise InvalidRequestError("'system' must be a string or a list of content blocks.", param="system")
    roles = (
        ("user", "assistant")
        if fmt == "messages"
        else ("system", "developer", "user", "assistant", "tool", "function")
    )
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in roles:
            raise InvalidRequestError(
                f"messages[{i}] must be an object with a role of {', '.join(roles)}.",
                param=f"messages[{i}].role",
            )
        content = msg.get("content")
        # Chat lets an assistant turn that only calls tools have no content.
        if not (_is_content(content) or (content is None and fmt == "chat")):
            raise InvalidRequestError(
                f"messages[{i}].content must be a string or a list of content parts.",
                param=f"messages[{i}].content",
            )


def _is_content(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(p, dict) for p in value))


def compression_object(report: Report) -> dict[str, Any]:
    """The `compression` object `/v1/compress` appends."""
    return {
        "technique": report.technique,
        "applied_strategies": report.applied_strategies,
        "compression_rate": report.compression_rate,
        "uncompressed_input_tokens": report.original_tokens,
        "compressed_input_tokens": report.optimized_tokens,
        "compression_time_ms": report.time_ms,
        "mode": report.mode,
        "removed": [{"where": r.where, "what": r.what} for r in report.removed],
    }
