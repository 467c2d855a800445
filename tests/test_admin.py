"""The admin HTTP API: token auth, keys, states, plans and bindings, sharing the CLI's service layer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import openai

from tests.conftest import MASTER_KEY
from tests.fakes.upstream import FakeUpstream
from tests.harness import InProcessWorker

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
