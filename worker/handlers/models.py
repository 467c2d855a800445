"""Model requests: thin handlers that authenticate, decode the body and hand over to the proxy pipeline."""

from __future__ import annotations

import time

from aiohttp import web

from .. import tokens
from ..appkeys import GATEWAY
from ..catalog import Entry, usable
from ..errors import InvalidRequestError
from ..jsonio import json_response, read_json_object
from ..optimizing import count_tokens as count_request_tokens
from ..proxy import authenticate, forward_json, proxy, reachable_providers
from ..routing import ModelNotFoundError, checked_model, resolve


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """`POST /v1/chat/completions` (OpenAI Chat Completions)."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    return await proxy(request, gw, key, "chat", await read_json_object(request))


async def responses(request: web.Request) -> web.StreamResponse:
    """`POST /v1/responses` (OpenAI Responses)."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    return await proxy(request, gw, key, "responses", await read_json_object(request))


async def messages(request: web.Request) -> web.StreamResponse:
    """`POST /v1/messages` (Anthropic Messages; errors in Anthropic's shape)."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    return await proxy(request, gw, key, "messages", await read_json_object(request))


async def embeddings(request: web.Request) -> web.StreamResponse:
    """`POST /v1/embeddings`, forwarded to an OpenAI-compatible provider."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    body = await read_json_object(request)
    model = checked_model(body.get("model"))
    if "input" not in body:
        raise InvalidRequestError("'input' is required.", param="input")
    route = resolve(model, gw.models)
    if route.wire != "chat":
        raise InvalidRequestError(
            f"The model {model!r} ({route.provider}) does not provide embeddings.", param="model"
        )
    return await forward_json(request, gw, key, route, "embeddings", body)


async def count_tokens(request: web.Request) -> web.StreamResponse:
    """`POST /v1/messages/count_tokens` (what Claude Code and the Anthropic SDK ask before a long request):
    Anthropic's own count for a Claude model, else `o200k_base`'s count of the request as sent."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    body = await read_json_object(request)
    model = checked_model(body.get("model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidRequestError("'messages' must be a list of message objects.", param="messages")
    route = resolve(model, gw.models)
    if route.provider == "anthropic":
        return await forward_json(request, gw, key, route, "v1/messages/count_tokens", body, free=True)
    encoding, _ = tokens.encoding_for_model(route.upstream_model)
    counted = await count_request_tokens("messages", body, encoding, len(await request.read()))
    return json_response({"input_tokens": counted})


_CREATED = int(time.mktime((2026, 11, 1, 0, 0, 0, 0, 0, 0)))


async def _usable(request: web.Request) -> list[Entry]:
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    reachable = await reachable_providers(request, gw, key)
    plan = gw.quotas.plans.get(key.plan) if key.plan else None
    return usable(gw.catalog, reachable, plan)


async def list_models(request: web.Request) -> web.StreamResponse:
    """`GET /v1/models`: what the calling key can use (a reachable provider, allowed by its plan), in
    OpenAI's list shape plus `provider`, `context_window`, `max_output_tokens`, `capabilities`, `tier`,
    `pricing`."""
    prices = request.app[GATEWAY].prices
    entries = sorted(await _usable(request), key=lambda e: e.info.name)
    return json_response({"object": "list", "data": [e.describe(prices, _CREATED) for e in entries]})


async def get_model(request: web.Request) -> web.StreamResponse:
    """`GET /v1/models/{id}` (ids with a slash, like OpenRouter's, are matched whole)."""
    wanted = request.match_info["id"]
    for entry in await _usable(request):
        if entry.info.name == wanted:
            return json_response(entry.describe(request.app[GATEWAY].prices, _CREATED))
    raise ModelNotFoundError(f"The model {wanted!r} is not available to this key.", param="model")
