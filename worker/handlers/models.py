"""Model requests: thin handlers that authenticate, decode the body and hand over to the proxy pipeline."""

from __future__ import annotations

import time

from aiohttp import web

from ..appkeys import GATEWAY
from ..errors import InvalidRequestError
from ..jsonio import json_response, read_json_object
from ..proxy import authenticate, forward_json, proxy
from ..routing import BUILTIN_MODELS, resolve


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
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("'model' is required and must be a non-empty string.", param="model")
    if "input" not in body:
        raise InvalidRequestError("'input' is required.", param="input")
    route = resolve(model, gw.models)
    if route.wire != "chat":
        raise InvalidRequestError(
            f"The model {model!r} ({route.provider}) does not provide embeddings.", param="model"
        )
    return await forward_json(request, gw, key, route, "embeddings", body)


_CREATED = int(time.mktime((2026, 11, 1, 0, 0, 0, 0, 0, 0)))


async def list_models(request: web.Request) -> web.StreamResponse:
    """`GET /v1/models`: the built-in catalog plus `[[models]]`, in OpenAI's list shape."""
    gw = request.app[GATEWAY]
    await authenticate(request, gw)
    routes = {name: resolve(name, gw.models) for name in BUILTIN_MODELS}
    routes.update(gw.models)
    data = [
        {
            "id": name,
            "object": "model",
            "created": _CREATED,
            "owned_by": route.provider,
            "provider": route.provider,
        }
        for name, route in sorted(routes.items())
    ]
    return json_response({"object": "list", "data": data})
