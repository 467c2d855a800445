"""Model requests: thin handlers that authenticate, decode the body and hand over to the proxy pipeline."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from aiohttp import web

from .. import memory, tokens
from ..accounting.pricing import PriceTable
from ..appkeys import GATEWAY
from ..catalog import Entry, plan_allows, usable
from ..errors import InvalidRequestError
from ..jsonio import json_response, object_of, read_body, read_json_object
from ..optimizing import count_tokens as count_request_tokens
from ..proxy import authenticate, forward_json, proxy, reachable_providers
from ..quotas import QuotaPlan
from ..routing import ModelNotFoundError, Provider, checked_model, resolve
from .stored import check_previous_response, goes_with_own_key


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """`POST /v1/chat/completions` (OpenAI Chat Completions)."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    raw = await read_body(request)
    return await proxy(request, gw, key, "chat", object_of(raw), raw)


async def responses(request: web.Request) -> web.StreamResponse:
    """`POST /v1/responses` (OpenAI Responses)."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    raw = await read_body(request)
    body = object_of(raw)
    if "previous_response_id" in body and not goes_with_own_key(request, body.get("model")):
        await check_previous_response(gw, key, body)
    return await proxy(request, gw, key, "responses", body, raw)


async def messages(request: web.Request) -> web.StreamResponse:
    """`POST /v1/messages` (Anthropic Messages; errors in Anthropic's shape)."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    raw = await read_body(request)
    return await proxy(request, gw, key, "messages", object_of(raw), raw)


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
    Anthropic's own count for a Claude model, else `o200k_base`'s count of the request as sent. TrexID
    references (`trex_ref` parts, `trex.context_ref`) are expanded first, as `/v1/messages` expands them: the
    count is of what that request would send."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    body = await read_json_object(request)
    model = checked_model(body.get("model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidRequestError("'messages' must be a list of message objects.", param="messages")
    route = resolve(model, gw.models)
    trex = body.pop("trex", None)  # never forwarded
    size = len(await request.read())
    size += await memory.expand_refs(
        gw.payloads, key.id, "messages", body, trex, gw.embeddings, size=size, limit=gw.max_body_bytes
    )
    if route.provider == "anthropic":
        return await forward_json(request, gw, key, route, "v1/messages/count_tokens", body, free=True)
    encoding, _ = tokens.encoding_for_model(route.upstream_model)
    counted = await count_request_tokens("messages", body, encoding, size)
    return json_response({"input_tokens": counted})


_CREATED = int(time.mktime((2026, 11, 1, 0, 0, 0, 0, 0, 0)))


async def _reach(request: web.Request) -> tuple[set[Provider], QuotaPlan | None]:
    """The providers the calling key can reach, and its plan."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    plan = gw.quotas.plans.get(key.plan) if key.plan else None
    return await reachable_providers(request, gw, key), plan


async def _usable(request: web.Request) -> list[Entry]:
    reachable, plan = await _reach(request)
    return usable(request.app[GATEWAY].catalog, reachable, plan)


async def list_models(request: web.Request) -> web.StreamResponse:
    """`GET /v1/models`: what the calling key can use (a reachable provider, allowed by its plan), in
    OpenAI's list shape plus `provider`, `context_window`, `max_output_tokens`, `capabilities`, `tier`,
    `pricing`; in Anthropic's (paged with `limit`, `after_id`, `before_id`) for the Anthropic SDK."""
    prices = request.app[GATEWAY].prices
    entries = sorted(await _usable(request), key=lambda e: e.info.name)
    if _anthropic(request):
        return json_response(_anthropic_page(request, [_anthropic_model(e, prices) for e in entries]))
    return json_response({"object": "list", "data": [e.describe(prices, _CREATED) for e in entries]})


async def get_model(request: web.Request) -> web.StreamResponse:
    """`GET /v1/models/{id}` (ids with a slash, like OpenRouter's, are matched whole): a catalog model with
    its catalog fields; any other model the key could send a request to (routed to a provider it can reach,
    allowed by its plan: `gpt-4o`, an OpenRouter `vendor/model`) with the fields every model has."""
    wanted = request.match_info["id"]
    gw = request.app[GATEWAY]
    reachable, plan = await _reach(request)
    entry = gw.catalog.get(wanted)
    if entry is not None and entry.route.provider in reachable and plan_allows(wanted, plan):
        if _anthropic(request):
            return json_response(_anthropic_model(entry, gw.prices))
        return json_response(entry.describe(gw.prices, _CREATED))
    if entry is None and plan_allows(wanted, plan):
        with contextlib.suppress(ModelNotFoundError):
            route = resolve(wanted, gw.models)
            if route.provider in reachable:
                return json_response(_routed_model(request, wanted, route.provider))
    raise ModelNotFoundError(f"The model {wanted!r} is not available to this key.", param="model")


def _routed_model(request: web.Request, model: str, provider: str) -> dict[str, Any]:
    """A model outside the catalog, in the client's shape: nothing is known of it but where it goes."""
    if _anthropic(request):
        return {
            "type": "model",
            "id": model,
            "display_name": model,
            "created_at": _CREATED_AT,
            "lifecycle": "active",
            "provider": provider,
        }
    return {"id": model, "object": "model", "created": _CREATED, "owned_by": provider, "provider": provider}


def _anthropic(request: web.Request) -> bool:
    """The Anthropic SDK (and Claude Code's model discovery) sends `anthropic-version` with every request."""
    return "anthropic-version" in request.headers


_CREATED_AT = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_CREATED))


def _anthropic_model(entry: Entry, prices: PriceTable) -> dict[str, Any]:
    """Anthropic's model object (`type`, `id`, `display_name`, `created_at`, `lifecycle`, `max_input_tokens`,
    `max_tokens`) plus our catalog fields. Our `capabilities` list is left out: Anthropic's `capabilities` is
    an object of per-feature support details, which typed clients fail to read a list as."""
    described = entry.describe(prices, _CREATED)
    for not_anthropics in ("object", "created", "owned_by", "capabilities"):
        described.pop(not_anthropics)
    return {
        "type": "model",
        "id": entry.info.name,
        "display_name": entry.info.name,
        "created_at": _CREATED_AT,
        "lifecycle": "active",
        "max_input_tokens": entry.info.context_window or None,  # 0: not known
        "max_tokens": entry.info.max_output or None,
        **described,
    }


def _anthropic_page(request: web.Request, models: list[dict[str, Any]]) -> dict[str, Any]:
    query = request.query
    raw_limit = query.get("limit", "20")
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= 1000:
        raise InvalidRequestError("'limit' must be an integer from 1 to 1000.", param="limit")
    limit = int(raw_limit)
    ids = [m["id"] for m in models]
    after, before = query.get("after_id"), query.get("before_id")
    start, end = 0, len(models)
    if after is not None:
        start = ids.index(after) + 1 if after in ids else len(models)
    if before is not None:
        end = ids.index(before) if before in ids else 0
        start = max(start, end - limit)
    page = models[start:end][:limit]
    return {
        "data": page,
        "has_more": (start + len(page) < end) if before is None else start > 0,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
