"""What OpenAI keeps on its side: background and stored Responses, stored chat completions. Every follow-up
the OpenAI SDK offers on them — retrieve (and resume a background stream), cancel, delete, list input items,
count input tokens; retrieve, update, list and delete stored chat completions and list their messages — is
passed through to OpenAI: method, query string and body as they came, the path rebuilt from the route and its
id.

They are no model calls: no optimizer, no routing, no plan quota, no usage event. The calling key is
authenticated and admitted by the rate limits like `GET /v1/models`, and the call goes with its OpenAI binding
(or an `X-Upstream-Api-Key` whose format names OpenAI). OpenAI's answer comes back with its status and body, a
stream event by event as it arrives.

OpenAI keeps these objects per OpenAI project, and one OpenAI key may be bound to several proxy keys: with the
binding, an id is served only to the proxy key that made it through the gateway (`stored_owners`); any other
id gets OpenAI's own not-found without OpenAI being asked, and the list of stored chat completions, which
would show every key's, is refused. The client's own OpenAI key reaches its own project: passed through as is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from adapters.transport import UpstreamUnavailable

from ..appkeys import CTX, GATEWAY, stamp
from ..auth import KeyRecord, MissingProviderKeyError
from ..catalog import SMART_AUTO
from ..errors import InvalidRequestError, PermissionDeniedError, UpstreamError
from ..gateway import Gateway
from ..jsonio import decode_json, read_body
from ..proxy import (
    _Client,
    _end,
    _error_response,
    _forwarded_headers,
    _is_event_stream,
    _override,
    _override_provider,
    _redirected,
    _stream_headers,
    _upstream_headers,
    _uses_own_key,
    _write,
    authenticate,
    provider_key,
    unavailable,
)
from ..stored_owners import ID_RE, Kind, forget, made_by, not_found, previous_not_found


async def forward(request: web.Request) -> web.StreamResponse:
    """Pass the request through to OpenAI's endpoint of the same path (without `/v1`, which the configured
    base URL ends with) and return its answer."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    url, target = _upstream_url(request, gw.base_urls["openai"])
    body = await read_body(request)
    doc: dict[str, Any] = {}
    if body.strip():
        doc = decode_json(body)
        if not isinstance(doc, dict):
            raise InvalidRequestError("Request body must be a JSON object.", code="invalid_json")
    if _override(request) is not None:
        # No model names the provider here: the client's own key is for the one its format names, as for
        # smart-auto; an Anthropic or OpenRouter key is never sent to OpenAI.
        request[CTX].override_for = _override_provider(request)
    try:
        api_key = await provider_key(request, gw, key, "openai")
    except MissingProviderKeyError as exc:
        exc.param = None  # there is no model to name
        raise
    if not _uses_own_key(request, "openai"):  # the binding, perhaps shared: only what this key made
        await _check_made_by(request, gw, key, target, doc)
    headers = _upstream_headers(request, gw, "openai", api_key)
    out_headers = {"X-Trex-Upstream-Provider": "openai"}
    try:
        upstream = await gw.upstream.request("openai", request.method, url, body or None, headers)
    except UpstreamUnavailable as exc:
        raise unavailable("openai", exc, out_headers) from exc
    try:
        out_headers.update(_forwarded_headers(upstream.headers))
        if upstream.status >= 400:
            async with asyncio.timeout(gw.upstream.timeouts.total):
                return await _error_response(request, upstream, "chat", "chat", out_headers, api_key)
        if upstream.status >= 300:  # redirects are not followed (see adapters.transport)
            raise _redirected("openai", upstream.status, out_headers)
        if _is_event_stream(upstream):
            return await _relay(request, upstream, out_headers)
        data = await upstream.read()  # bounded by the session's total and idle timeouts
        if request.method == "DELETE" and target is not None:  # OpenAI deleted it: so goes its record
            request[CTX].wait_until(forget(gw.kv, *target))
        if data or upstream.status not in (204, 205):
            out_headers["Content-Type"] = upstream.headers.get("Content-Type", "application/json")
        return web.Response(body=data or None, status=upstream.status, headers=out_headers)
    except TimeoutError as exc:
        raise UpstreamError(
            "Upstream openai timed out.", status=504, code="upstream_timeout", headers=out_headers
        ) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            f"Upstream openai failed: {exc.__class__.__name__}.", code="upstream_error", headers=out_headers
        ) from exc
    except asyncio.CancelledError:  # the client left: stop reading what nobody will get
        upstream.close()
        raise
    finally:
        upstream.release()


def _upstream_url(request: web.Request, base: str) -> tuple[URL, tuple[Kind, str] | None]:
    """The route's own path with its id checked, under OpenAI's base URL, and the query string unchanged;
    and the object the route is about, if it names one."""
    path = _canonical(request).removeprefix("/v1")
    target: tuple[Kind, str] | None = None
    if "{id}" in path:
        ident = request.match_info["id"]
        responses = path.startswith("/responses")
        # The id goes into the upstream path as it is: never a `/`, `.` or `%` that could make the path
        # another endpoint's for the bound key.
        if not ID_RE.fullmatch(ident):
            param = "response_id" if responses else "completion_id"
            raise InvalidRequestError(
                f"Invalid '{param}': {ident[:100]!r}; expected an OpenAI id ('resp_…', 'chatcmpl-…').",
                param=param,
                code="invalid_id",
            )
        path = path.replace("{id}", ident)
        target = ("response" if responses else "chat_completion", ident)
    url = str(URL(base + path))
    query = request.rel_url.raw_query_string
    return URL(f"{url}?{query}" if query else url, encoded=True), target  # encoded: sent exactly as it came


def _canonical(request: web.Request) -> str:
    """The route's path as the route table has it (`/v1/responses/{id}`)."""
    resource = request.match_info.route.resource
    assert resource is not None  # a matched route always has one
    return resource.canonical


async def _check_made_by(
    request: web.Request, gw: Gateway, key: KeyRecord, target: tuple[Kind, str] | None, doc: dict[str, Any]
) -> None:
    """With the key's binding, which other proxy keys may share, only what this key made is reached: another
    id is OpenAI's own not-found (asked of nobody, so nothing tells whether it exists), and the list of stored
    chat completions, which would hold every key's, is refused."""
    if target is not None:
        if not await made_by(gw.kv, *target, key.id):
            raise not_found(*target)
    elif _canonical(request) == "/v1/chat/completions":
        raise PermissionDeniedError(
            "Listing stored chat completions is not available with the OpenAI key this proxy key is bound "
            "to: it may be shared with other proxy keys, whose completions the list would show. Retrieve "
            "yours by id, or list them with your own OpenAI key in the X-Upstream-Api-Key header.",
            code="own_upstream_key_required",
            headers={"X-Trex-Upstream-Provider": "openai"},
        )
    else:  # counting input tokens: a previous response is read too
        await check_previous_response(gw, key, doc)


def goes_with_own_key(request: web.Request, model: Any) -> bool:
    """True when a model request naming `model` reaches OpenAI with the client's own `X-Upstream-Api-Key`
    (for a model it names, the override is for that model's provider; for smart-auto, for the provider its
    format names)."""
    return _override(request) is not None and (model != SMART_AUTO or _override_provider(request) == "openai")


async def check_previous_response(gw: Gateway, key: KeyRecord, body: dict[str, Any]) -> None:
    """A `previous_response_id` sent with the key's binding must be a response this key made: the model would
    otherwise be given another key's conversation. Another id is OpenAI's own 400 for one it does not have."""
    previous = body.get("previous_response_id")
    if isinstance(previous, str) and not await made_by(gw.kv, "response", previous, key.id):
        raise previous_not_found(previous)


class _Relayed(web.StreamResponse):
    """A stream that ends as the upstream's did: complete, or cut off (no final chunk, the connection closed),
    so the client's SDK sees the interruption and can resume after the last event it got (a background
    response: `starting_after`). An error event made up here would carry a sequence number OpenAI never sent,
    and a resume after it would skip an event; a partial event the upstream left is dropped by the client's
    SSE parser, as the spec says, where an event written after it would be garbled."""

    _cut = False

    def cut(self) -> None:
        self._cut = True
        self.force_close()

    async def write_eof(self, data: bytes = b"") -> None:
        if not self._cut:
            await super().write_eof(data)


async def _relay(
    request: web.Request, upstream: aiohttp.ClientResponse, headers: dict[str, str]
) -> web.StreamResponse:
    """The upstream's event stream byte for byte: what arrived is written at once, never a fixed-size read."""
    out = _Relayed(status=upstream.status, headers=_stream_headers(headers))
    stamp(request, out)
    try:
        await out.prepare(request)
    except ConnectionResetError:  # the client left while the upstream got ready
        upstream.close()
        return out
    client = _Client.of(request)
    try:
        async for chunk in upstream.content.iter_any():
            if not await _write(out, chunk, client):
                upstream.close()  # the client left: stop reading the upstream
                return out
    except (TimeoutError, aiohttp.ClientError):  # the upstream broke off or stalled
        upstream.close()
        out.cut()
        return out
    await _end(out, client)
    return out
