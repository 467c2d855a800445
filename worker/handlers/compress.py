"""`POST /v1/compress`: optimize a payload and return it, with no model call."""

from __future__ import annotations

from aiohttp import web

from .. import memory
from ..appkeys import GATEWAY
from ..errors import InvalidRequestError
from ..jsonio import json_response, read_json_object
from ..optimize.segments import detect_format
from ..optimizing import compression_object, resolve_options, run, validate_payload
from ..proxy import authenticate


async def compress(request: web.Request) -> web.StreamResponse:
    """The payload with `messages`/`input`/`system`/`tools` replaced by their optimized versions, every other
    field untouched (the `trex` control field is consumed), plus a `compression` object."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    body = await read_json_object(request)
    fmt = detect_format(body)
    validate_payload(fmt, body)
    profile = body.get("compression_model") or request.headers.get("X-Trex-Compression-Model")
    options = resolve_options(
        body.pop("trex", None),
        request.headers,
        gw.optimize_mode,
        gw.protect_recent_turns,
        key_mode=key.optimize_mode,
        profile=profile,
    )
    store = body.pop("store", None)
    if store is not None and not isinstance(store, bool):
        raise InvalidRequestError("'store' must be true or false.", param="store")
    original = memory.context_text(fmt, body) if store else None
    report = await run(fmt, body, options, request.content_length or 0)
    body["compression"] = compression_object(report)
    if original is None:
        return json_response(body)
    # The optimized context as a TokenZip payload owned by this key, passed on by its TrexID.
    summary = memory.context_text(fmt, body)
    kept = await memory.store(gw.payloads, key.id, summary, original, gw.memory_ttl_seconds, gw.embeddings)
    body["trex_id"] = kept.trex_id
    return json_response(body, headers={"X-Trex-Id": kept.trex_id})
