"""`/v1/payloads`: the TokenZip payload lifecycle for signed agents (seed `000_…`).

Every route first verifies the agent's HMAC signature (401 with a code saying why), then counts the request
against the rate limits (the per-key limit applies to the agent id); payloads never draw on a quota, and
reading one is free. Reading, describing, expanding and revoking also accept a proxy key (`Authorization:
Bearer trex_…` or `x-api-key`), for the payloads that key stored (`/v1/compress` with `store`,
`trex.store_context`) or is a receiver of. Errors use the OpenAI error shape.
"""

from __future__ import annotations

from aiohttp import web

from ..agents import AGENT_PREFIX, AgentRecord, verify_agent
from ..appkeys import CTX, GATEWAY
from ..auth import credential_from_headers
from ..jsonio import json_response, read_body
from ..memory import parse_expand, search
from ..payloads import decode_push, document, headers, receipt, sent_fields
from ..proxy import authenticate


async def _agent(request: web.Request) -> AgentRecord:
    gw = request.app[GATEWAY]
    agent = await verify_agent(request, gw.agents)
    limits = gw.limits
    if limits.enabled:
        ip = limits.client_ip(request.remote, request.headers.get("X-Forwarded-For"))
        admitted = await limits.admit_agent(agent.id, ip)
        if admitted is not None:
            request[CTX].rate = admitted
    return agent


async def _reader(request: web.Request) -> str:
    """Who reads: a signed agent, or a proxy key (not for pushes); its id."""
    credential = credential_from_headers(request.headers)
    if credential is not None and not credential.startswith(AGENT_PREFIX):
        return (await authenticate(request, request.app[GATEWAY])).id
    return (await _agent(request)).id


async def push(request: web.Request) -> web.StreamResponse:
    """`POST /v1/payloads`: store a payload; 201 with its `trex_id`, `expires_at` and `checksum`."""
    agent = await _agent(request)
    body = await read_body(request)  # 413 past MAX_BODY_BYTES
    stored = await request.app[GATEWAY].payloads.put(agent.id, decode_push(body), sent_fields(body))
    return json_response(
        receipt(stored),
        status=201,
        headers={"X-Trex-Id": stored.trex_id, "Location": f"/v1/payloads/{stored.trex_id}"},
    )


async def get(request: web.Request) -> web.StreamResponse:
    """`GET /v1/payloads/{trex_id}`: the payload and its metadata, for its sender and receivers."""
    reader = await _reader(request)
    stored = await request.app[GATEWAY].payloads.readable(request.match_info["trex_id"], reader)
    return json_response(document(stored), headers=headers(stored))


async def head(request: web.Request) -> web.StreamResponse:
    """`HEAD /v1/payloads/{trex_id}`: the metadata as headers, no body."""
    reader = await _reader(request)
    stored = await request.app[GATEWAY].payloads.readable(request.match_info["trex_id"], reader)
    return web.Response(status=200, headers=headers(stored))


async def delete(request: web.Request) -> web.StreamResponse:
    """`DELETE /v1/payloads/{trex_id}`: revoke (the sender only); 204."""
    reader = await _reader(request)
    await request.app[GATEWAY].payloads.revoke(request.match_info["trex_id"], reader)
    return web.Response(status=204)


async def expand(request: web.Request) -> web.StreamResponse:
    """`GET /v1/payloads/{trex_id}/expand?query=…&k=…`: the chunks most similar to the query, with scores."""
    reader = await _reader(request)
    stored = await request.app[GATEWAY].payloads.readable(request.match_info["trex_id"], reader)
    how = parse_expand({"query": request.query.get("query"), "k": _k(request.query.get("k"))}, "")
    assert isinstance(how, tuple)
    query, k = how
    chunks = stored.payload.chunks
    data = [
        {"index": i, "score": score, "text": chunks[i] if i < len(chunks) else None}
        for i, score in await search(stored, query, k, request.app[GATEWAY].embeddings)
    ]
    return json_response({"object": "list", "trex_id": stored.trex_id, "query": query, "data": data})


def _k(raw: str | None) -> int | str:
    if raw is None:
        return 5
    return int(raw) if raw.isascii() and raw.isdigit() else raw
