"""`POST /v1/compress`: optimize a payload and return it, with no model call."""

from __future__ import annotations

from aiohttp import web

from .. import memory
from ..appkeys import GATEWAY
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
    profile, profile_from = body.get("compression_model"), "compression_model"
    if profile is None:  # an empty or mistyped field is refused, not read as "no profile"
        profile, profile_from = request.headers.get("X-Trex-Compression-Model"), "X-Trex-Compression-Model"
    trex = body.pop("trex", None)
    options = resolve_options(
        trex,
        request.headers,
        gw.optimize_mode,
        gw.protect_recent_turns,
        key_mode=key.optimize_mode,
        profile=profile,
        profile_from=profile_from,
    )
    # `trex.store_context`, as on proxied requests. (A top-level `store` is the payload's own field, e.g.
    # OpenAI's `store: false`, and stays untouched like every other field.)
    store_ttl = memory.store_option(trex, gw.memory_ttl_seconds)
    original = memory.context_text(fmt, body) if store_ttl is not None else ""
    report = await run(fmt, body, options, len(await request.read()))  # the body as read, even if chunked
    body["compression"] = compression_object(report)
    if store_ttl is None:
        return json_response(body)
    # The optimized context as a TokenZip payload owned by this key, passed on by its TrexID.
    summary = memory.context_text(fmt, body)
    kept = await memory.store(gw.payloads, key.id, summary, original, store_ttl, gw.embeddings)
    body["trex_id"] = kept.trex_id
    return json_response(body, headers={"X-Trex-Id": kept.trex_id})
