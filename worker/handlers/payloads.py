"""`/v1/payloads`: the TokenZip payload lifecycle for signed agents (seed `000_…`).

Every route first verifies the agent's HMAC signature (401 with a code saying why), then counts the request
against the rate limits (the per-key limit applies to the agent id); payloads never draw on a quota, and
reading one is free. Errors use the OpenAI error shape.
"""

from __future__ import annotations

from aiohttp import web

from ..agents import AgentRecord, verify_agent
from ..appkeys import GATEWAY, RATE
from ..jsonio import json_response, read_body
from ..payloads import decode_push, document, headers, receipt


async def _agent(request: web.Request) -> AgentRecord:
    gw = request.app[GATEWAY]
    agent = await verify_agent(request, gw.agents)
    limits = gw.limits
    if limits.enabled:
        ip = limits.client_ip(request.remote, request.headers.get("X-Forwarded-For"))
        admitted = await limits.admit_agent(agent.id, ip)
        if admitted is not None:
            request[RATE] = admitted
    return agent


async def push(request: web.Request) -> web.StreamResponse:
    """`POST /v1/payloads`: store a payload; 201 with its `trex_id`, `expires_at` and `checksum`."""
    agent = await _agent(request)
    body = await read_body(request)  # 413 past MAX_BODY_BYTES
    stored = await request.app[GATEWAY].payloads.put(agent.id, decode_push(body))
    return json_response(
        receipt(stored),
        status=201,
        headers={"X-Trex-Id": stored.trex_id, "Location": f"/v1/payloads/{stored.trex_id}"},
    )


async def get(request: web.Request) -> web.StreamResponse:
    """`GET /v1/payloads/{trex_id}`: the payload and its metadata, for its sender and receivers."""
    agent = await _agent(request)
    stored = await request.app[GATEWAY].payloads.readable(request.match_info["trex_id"], agent.id)
    return json_response(document(stored), headers=headers(stored))


async def head(request: web.Request) -> web.StreamResponse:
    """`HEAD /v1/payloads/{trex_id}`: the metadata as headers, no body."""
    agent = await _agent(request)
    stored = await request.app[GATEWAY].payloads.readable(request.match_info["trex_id"], agent.id)
    return web.Response(status=200, headers=headers(stored))


async def delete(request: web.Request) -> web.StreamResponse:
    """`DELETE /v1/payloads/{trex_id}`: revoke (the sender only); 204."""
    agent = await _agent(request)
    await request.app[GATEWAY].payloads.revoke(request.match_info["trex_id"], agent.id)
    return web.Response(status=204)
