"""The admin HTTP API: token auth, keys, states, plans and bindings, sharing the CLI's service layer."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
import openai

from tests.conftest import MASTER_KEY
from tests.fakes.upstream import FakeUpstream
from tests.harness import InProcessWorker
from worker.appkeys import GATEWAY

ADMIN = "adm_" + "z" * 40
PLANS = '[plans.pro]\nmonthly_price_usd = 20\nguarantee = true\n[plans.free]\ndescription = "starter"\n'


def call(
    worker: InProcessWorker, method: str, path: str, body: Any = None, token: str | None = ADMIN
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(worker.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_admin_routes_do_not_exist_without_a_token(make_worker: Callable[..., InProcessWorker]) -> None:
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    status, doc = call(worker, "GET", "/admin/v1/keys")
    assert status == 404 and doc["error"]["code"] == "not_found"
    # Nor does a method the route lacks give it away (a 405 would list the methods it has).
    for method, path in (("PUT", "/admin/v1/keys"), ("POST", "/admin/v1/keys/key_0123456789abcdef")):
        status, doc = call(worker, method, path, {})
        assert status == 404 and doc["error"]["code"] == "not_found"


def test_admin_token_is_required_and_checked(make_worker: Callable[..., InProcessWorker]) -> None:
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN})
    assert call(worker, "GET", "/admin/v1/keys", token=None)[1]["error"]["code"] == "missing_admin_token"
    status, doc = call(worker, "GET", "/admin/v1/keys", token=ADMIN[:-1] + "y")
    assert status == 401 and doc["error"]["code"] == "invalid_admin_token"
    assert ADMIN not in json.dumps(doc)


def test_keys_lifecycle_through_the_admin_api(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN}, extra=PLANS)
    status, created = call(worker, "POST", "/admin/v1/keys", {"name": "team-a", "plan": "pro"})
    assert status == 201 and created["key"].startswith("trex_") and created["plan"] == "pro"
    key_id = created["id"]
    client = openai.OpenAI(api_key=created["key"], base_url=worker.url + "/v1", max_retries=0)
    try:
        # Bind a provider key through the API; the proxy uses it, and it is never returned.
        status, bound = call(
            worker, "PUT", f"/admin/v1/keys/{key_id}/bindings/openai", {"api_key": "sk-admin-bound"}
        )
        assert status == 200 and bound == {"provider": "openai", "bound": True}
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert fake_upstream.last().headers["Authorization"] == "Bearer sk-admin-bound"
        status, listed = call(worker, "GET", f"/admin/v1/keys/{key_id}/bindings")
        assert listed["data"] == [{"provider": "openai", "bound": True}] and "sk-admin" not in json.dumps(
            listed
        )

        status, keys = call(worker, "GET", "/admin/v1/keys")
        assert [k["id"] for k in keys["data"]] == [key_id] and "key" not in keys["data"][0]
        assert isinstance(keys["data"][0]["last_used"], int)
        status, one = call(worker, "GET", f"/admin/v1/keys/{key_id}")
        assert status == 200 and one["name"] == "team-a" and "hash" not in one

        status, changed = call(
            worker, "PATCH", f"/admin/v1/keys/{key_id}", {"state": "suspended", "plan": "free"}
        )
        assert status == 200 and (changed["state"], changed["plan"]) == ("suspended", "free")
        try:
            client.models.list()
            raise AssertionError("a suspended key must be refused")
        except openai.AuthenticationError as err:
            assert err.code == "key_suspended"
        assert call(worker, "PATCH", f"/admin/v1/keys/{key_id}", {"state": "active"})[1]["state"] == "active"
        assert client.models.list().data

        for bad, param in [
            ({"state": "paused"}, "state"),
            ({"plan": "gold"}, "plan"),
            ({"name": "x"}, "name"),
        ]:
            status, doc = call(worker, "PATCH", f"/admin/v1/keys/{key_id}", bad)
            assert status == 400 and doc["error"]["param"] == param
        assert call(worker, "POST", "/admin/v1/keys", {"plan": "pro"})[1]["error"]["param"] == "name"

        assert call(worker, "DELETE", f"/admin/v1/keys/{key_id}/bindings/openai")[0] == 200
        assert call(worker, "DELETE", f"/admin/v1/keys/{key_id}/bindings/openai")[0] == 404
        assert call(worker, "PUT", f"/admin/v1/keys/{key_id}/bindings/azure", {"api_key": "x"})[0] == 404

        assert (
            call(worker, "PATCH", f"/admin/v1/keys/{key_id}", {"state": "revoked"})[1]["state"] == "revoked"
        )
        status, doc = call(worker, "PATCH", f"/admin/v1/keys/{key_id}", {"state": "active"})
        assert status == 409 and doc["error"]["code"] == "conflict"

        assert call(worker, "DELETE", f"/admin/v1/keys/{key_id}") == (
            200,
            {"id": key_id, "object": "proxy_key", "deleted": True},
        )
        status, doc = call(worker, "GET", f"/admin/v1/keys/{key_id}")
        assert status == 404 and doc["error"]["code"] == "key_not_found"
        try:
            client.models.list()
            raise AssertionError("a deleted key must be refused")
        except openai.AuthenticationError as err:
            assert err.code == "invalid_api_key"
    finally:
        client.close()


def test_plans_are_listed(make_worker: Callable[..., InProcessWorker]) -> None:
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN}, extra=PLANS)
    status, doc = call(worker, "GET", "/admin/v1/plans")
    assert status == 200
    assert doc["data"] == [
        {"name": "free", "monthly_price_usd": None, "guarantee": False, "description": "starter"},
        {"name": "pro", "monthly_price_usd": 20.0, "guarantee": True, "description": ""},
    ]


def _concurrently(worker: InProcessWorker, *requests: tuple[str, str, Any]) -> list[int]:
    async def go() -> list[int]:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as session:

            async def one(method: str, path: str, body: Any) -> int:
                async with session.request(method, worker.url + path, json=body) as r:
                    await r.read()
                    return r.status

            return list(await asyncio.gather(*(one(*r) for r in requests)))

    return asyncio.run(go())


def test_a_revoke_is_final_even_when_changes_race_it(make_worker: Callable[..., InProcessWorker]) -> None:
    """A revoke sent at the same moment as a plan change or an activation is never undone by it."""
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN}, extra=PLANS)
    for _ in range(10):
        key_id = call(worker, "POST", "/admin/v1/keys", {"name": "k"})[1]["id"]
        agent_id = call(worker, "POST", "/admin/v1/agents", {"name": "a"})[1]["id"]
        _concurrently(
            worker,
            ("PATCH", f"/admin/v1/keys/{key_id}", {"state": "revoked"}),
            ("PATCH", f"/admin/v1/keys/{key_id}", {"plan": "pro"}),
            ("PATCH", f"/admin/v1/keys/{key_id}", {"state": "active"}),
            ("PATCH", f"/admin/v1/agents/{agent_id}", {"state": "revoked"}),
            ("PATCH", f"/admin/v1/agents/{agent_id}", {"state": "active"}),
        )
        assert call(worker, "GET", f"/admin/v1/keys/{key_id}")[1]["state"] == "revoked"
        assert call(worker, "GET", f"/admin/v1/agents/{agent_id}")[1]["state"] == "revoked"


def test_a_deleted_key_leaves_no_binding_behind_when_a_bind_races_it(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN})
    kv = worker.app[GATEWAY].kv
    for _ in range(10):
        key_id = call(worker, "POST", "/admin/v1/keys", {"name": "k"})[1]["id"]
        _concurrently(
            worker,
            ("PUT", f"/admin/v1/keys/{key_id}/bindings/openai", {"api_key": "sk-racing"}),
            ("DELETE", f"/admin/v1/keys/{key_id}", None),
            ("PATCH", f"/admin/v1/keys/{key_id}", {"state": "suspended"}),
        )
        assert call(worker, "GET", f"/admin/v1/keys/{key_id}")[0] == 404
        assert worker.call(kv.list(prefix=f"bindings/{key_id}/")).keys == []
        assert worker.call(kv.get(f"keys/{key_id}")) is None


def test_credit_grants_at_the_same_moment_stay_within_the_bound(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN})
    key_id = call(worker, "POST", "/admin/v1/keys", {"name": "k"})[1]["id"]
    credits = f"/admin/v1/keys/{key_id}/credits"
    assert call(worker, "POST", credits, {"amount_usd": 900_000_000})[0] == 200
    statuses = _concurrently(worker, *[("POST", credits, {"amount_usd": 90_000_000})] * 5)
    assert sorted(statuses) == [200, 400, 400, 400, 400]
    assert call(worker, "GET", credits)[1]["balance_usd"] == 990_000_000
    # An integer too large for a float is out of range like any other, not a 500.
    status, doc = call(worker, "POST", credits, {"amount_usd": 10**400})
    assert status == 400 and doc["error"]["param"] == "amount_usd"


def test_a_refused_key_change_changes_nothing_and_a_key_shows_its_last_use(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN}, extra=PLANS)
    created = call(worker, "POST", "/admin/v1/keys", {"name": "k"})[1]
    status, doc = call(
        worker, "PATCH", f"/admin/v1/keys/{created['id']}", {"state": "suspended", "plan": "nope"}
    )
    assert status == 400 and doc["error"]["param"] == "plan"
    assert call(worker, "GET", f"/admin/v1/keys/{created['id']}")[1]["state"] == "active"
    with openai.OpenAI(api_key=created["key"], base_url=worker.url + "/v1", max_retries=0) as client:
        client.models.list()
    worker.call(asyncio.sleep(0.2))  # the last-use mark is written after the response
    listed = call(worker, "GET", "/admin/v1/keys")[1]["data"][0]["last_used"]
    assert (
        isinstance(listed, int)
        and call(worker, "GET", f"/admin/v1/keys/{created['id']}")[1]["last_used"] == listed
    )
