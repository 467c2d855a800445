"""The admin HTTP API: keys, their bindings, state and credits, signed agents, and the configured plans.

Authenticated with `Authorization: Bearer $TREX_ADMIN_TOKEN` (compared in constant time). Without a token in
the config every admin route answers 404, as if it did not exist. The handlers call the same `KeyStore`
methods as the `trex keys` commands (and the same `AgentStore` as `trex agents`), so the CLI and the API
share one service layer.
"""

from __future__ import annotations

import hmac
import math
from typing import Any

from aiohttp import web

from ..accounting.plans import Plan
from ..agents import AGENT_STATES, AgentRecord
from ..appkeys import CONFIG, GATEWAY
from ..auth import KEY_STATES, PROVIDERS, KeyRecord
from ..errors import AuthenticationError, InvalidRequestError, NotFoundError
from ..grants import MAX_CREDITS_USD
from ..jsonio import json_response, read_json_object

ADMIN_TOKEN_NAME = "TREX_ADMIN_TOKEN"


def _require_admin(request: web.Request) -> None:
    token = request.app[CONFIG].secret(ADMIN_TOKEN_NAME)
    if not token:
        raise NotFoundError(f"Unknown route: {request.method} {request.path}")
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise AuthenticationError(
            "Admin routes need 'Authorization: Bearer <admin token>'.", code="missing_admin_token"
        )
    # surrogateescape: raw non-UTF-8 header bytes compare as themselves (and never match) instead of raising.
    if not hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), token.encode()):
        raise AuthenticationError("Invalid admin token.", code="invalid_admin_token")


def _key_doc(record: KeyRecord, last_used: int | None = None) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "proxy_key",
        "name": record.name,
        "state": record.state,
        "plan": record.plan,
        "optimize_mode": record.optimize_mode,
        "prefix": record.prefix,
        "created": record.created,
        "last_used": last_used,
    }


def _plans(request: web.Request) -> dict[str, Plan]:
    usage = request.app[GATEWAY].usage
    return usage.plans if usage is not None else {}


def _plan_value(request: web.Request, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in request.app[CONFIG].tables.get("plans", {}):
        raise InvalidRequestError(f"'plan' must be a configured plan or null, got {value!r}.", param="plan")
    return value


async def create_key(request: web.Request) -> web.StreamResponse:
    """`POST /admin/v1/keys` {name, plan?, optimize_mode?}: the new key, shown once."""
    _require_admin(request)
    body = await read_json_object(request)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError("'name' is required and must be a non-empty string.", param="name")
    mode = body.get("optimize_mode")
    if mode is not None and not isinstance(mode, str):
        raise InvalidRequestError("'optimize_mode' must be a string.", param="optimize_mode")
    store = request.app[GATEWAY].keys
    record, token = await store.create(name, plan=_plan_value(request, body.get("plan")), optimize_mode=mode)
    return json_response({**_key_doc(record), "key": token}, status=201)


async def list_keys(request: web.Request) -> web.StreamResponse:
    """`GET /admin/v1/keys`."""
    _require_admin(request)
    rows = await request.app[GATEWAY].keys.list_keys()
    return json_response({"object": "list", "data": [_key_doc(r, used) for r, used in rows]})


async def get_key(request: web.Request) -> web.StreamResponse:
    """`GET /admin/v1/keys/{id}`."""
    _require_admin(request)
    store = request.app[GATEWAY].keys
    record = await store.get(request.match_info["id"])
    return json_response(_key_doc(record, await store.last_used(record.id)))


async def update_key(request: web.Request) -> web.StreamResponse:
    """`PATCH /admin/v1/keys/{id}` {state?, plan?}."""
    _require_admin(request)
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"state", "plan"})
    if unknown:
        raise InvalidRequestError(
            f"Unknown field '{unknown[0]}': only state and plan can change.", param=unknown[0]
        )
    if "state" in body and body["state"] not in KEY_STATES:
        raise InvalidRequestError(f"'state' must be one of {', '.join(KEY_STATES)}.", param="state")
    plan = _plan_value(request, body["plan"]) if "plan" in body else None  # all checked before any change
    store = request.app[GATEWAY].keys
    key_id = request.match_info["id"]
    record = await store.get(key_id)
    if "state" in body:
        record = await store.set_state(key_id, body["state"])
    if "plan" in body:
        record = await store.set_plan(key_id, plan)
    return json_response(_key_doc(record, await store.last_used(key_id)))


async def delete_key(request: web.Request) -> web.StreamResponse:
    """`DELETE /admin/v1/keys/{id}`."""
    _require_admin(request)
    key_id = request.match_info["id"]
    await request.app[GATEWAY].keys.delete(key_id)
    return json_response({"id": key_id, "object": "proxy_key", "deleted": True})


def _provider(request: web.Request) -> str:
    provider = request.match_info["provider"]
    if provider not in PROVIDERS:
        raise NotFoundError(f"Unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}.")
    return provider


async def list_bindings(request: web.Request) -> web.StreamResponse:
    """`GET /admin/v1/keys/{id}/bindings`: which providers have a key bound (never the keys)."""
    _require_admin(request)
    store = request.app[GATEWAY].keys
    key_id = request.match_info["id"]
    await store.get(key_id)
    providers = await store.bound_providers(key_id)
    return json_response({"object": "list", "data": [{"provider": p, "bound": True} for p in providers]})


async def put_binding(request: web.Request) -> web.StreamResponse:
    """`PUT /admin/v1/keys/{id}/bindings/{provider}` {api_key}: bind (encrypted), replacing any earlier."""
    _require_admin(request)
    provider = _provider(request)
    body = await read_json_object(request)
    api_key = body.get("api_key")
    if not isinstance(api_key, str) or not api_key.strip():
        raise InvalidRequestError("'api_key' is required and must be a non-empty string.", param="api_key")
    await request.app[GATEWAY].keys.bind(request.match_info["id"], provider, api_key)
    return json_response({"provider": provider, "bound": True})


async def delete_binding(request: web.Request) -> web.StreamResponse:
    """`DELETE /admin/v1/keys/{id}/bindings/{provider}`."""
    _require_admin(request)
    provider = _provider(request)
    if not await request.app[GATEWAY].keys.unbind(request.match_info["id"], provider):
        raise NotFoundError(f"No {provider} key is bound to {request.match_info['id']}.")
    return json_response({"provider": provider, "bound": False})


async def list_plans(request: web.Request) -> web.StreamResponse:
    """`GET /admin/v1/plans`: the plans of the config."""
    _require_admin(request)
    data = [
        {
            "name": p.name,
            "monthly_price_usd": p.monthly_price_usd,
            "guarantee": p.guarantee,
            "description": p.description,
        }
        for p in sorted(_plans(request).values(), key=lambda p: p.name)
    ]
    return json_response({"object": "list", "data": data})


async def credits(request: web.Request) -> web.StreamResponse:
    """`GET /admin/v1/keys/{id}/credits` (the balance) and `POST` {amount_usd} (add; negative removes),
    applied at most once per `Idempotency-Key` header within a day (a repeat answers the first answer again,
    marked `Idempotent-Replayed: true`; the key reused for another grant is a 422)."""
    _require_admin(request)
    gw = request.app[GATEWAY]
    key_id = request.match_info["id"]
    await gw.keys.get(key_id)
    headers = {}
    if request.method == "POST":
        body = await read_json_object(request)
        amount = body.get("amount_usd")
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise InvalidRequestError("'amount_usd' is required and must be a number.", param="amount_usd")
        if isinstance(amount, int) and abs(amount) > MAX_CREDITS_USD:
            amount = math.inf  # too many digits for a float: refused as out of range, not a 500
        grant = await gw.quotas.add_credits(
            key_id, float(amount), idempotency_key=request.headers.get("Idempotency-Key")
        )
        balance = grant.balance_usd
        if grant.replayed:
            headers["Idempotent-Replayed"] = "true"
    else:
        balance = await gw.quotas.balance(key_id)
    return json_response({"key_id": key_id, "object": "credits", "balance_usd": balance}, headers=headers)


def _agent_doc(record: AgentRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "agent",
        "name": record.name,
        "state": record.state,
        "created": record.created,
        "prefix": record.prefix,
    }


async def create_agent(request: web.Request) -> web.StreamResponse:
    """`POST /admin/v1/agents` {name}: the new agent and its secret (shown once; stored only sealed)."""
    _require_admin(request)
    body = await read_json_object(request)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError("'name' is required and must be a non-empty string.", param="name")
    record, secret = await request.app[GATEWAY].agents.create(name)
    return json_response({**_agent_doc(record), "secret": secret}, status=201)


async def list_agents(request: web.Request) -> web.StreamResponse:
    """`GET /admin/v1/agents` (never the secrets)."""
    _require_admin(request)
    agents = await request.app[GATEWAY].agents.list_agents()
    return json_response({"object": "list", "data": [_agent_doc(a) for a in agents]})


async def get_agent(request: web.Request) -> web.StreamResponse:
    """`GET /admin/v1/agents/{id}`."""
    _require_admin(request)
    return json_response(_agent_doc(await request.app[GATEWAY].agents.get(request.match_info["id"])))


async def update_agent(request: web.Request) -> web.StreamResponse:
    """`PATCH /admin/v1/agents/{id}` {state}: active, suspended or revoked (final)."""
    _require_admin(request)
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"state"})
    if unknown:
        raise InvalidRequestError(f"Unknown field '{unknown[0]}': only state can change.", param=unknown[0])
    if "state" not in body:
        raise InvalidRequestError("'state' is required.", param="state")
    state = body["state"]
    if state not in AGENT_STATES:
        raise InvalidRequestError(f"'state' must be one of {', '.join(AGENT_STATES)}.", param="state")
    record = await request.app[GATEWAY].agents.set_state(request.match_info["id"], state)
    return json_response(_agent_doc(record))


async def delete_agent(request: web.Request) -> web.StreamResponse:
    """`DELETE /admin/v1/agents/{id}`."""
    _require_admin(request)
    agent_id = request.match_info["id"]
    await request.app[GATEWAY].agents.delete(agent_id)
    return json_response({"id": agent_id, "object": "agent", "deleted": True})
