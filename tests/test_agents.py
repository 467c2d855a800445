"""Signed agents (HMAC mode of the payload routes, seed `000_…`): the seed's Node example, every 401, nonces
shared across instances, secrets sealed at rest, and `trex agents` on the command line.

The payload routes themselves come later; a probe route mounted through the harness calls `verify_agent`,
so every check here goes over real HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import MASTER_KEY
from tests.harness import ExtraRoutes, InProcessWorker
from tests.test_admin import call as admin_call
from tests.test_cli import trex
from worker.agents import (
    AgentStore,
    authorization_header,
    iso_timestamp,
    parse_authorization,
    sign,
    verify_agent,
)
from worker.appkeys import GATEWAY
from worker.errors import AuthenticationError

PROBE = "/v1/agent-probe"
SEED_TIMESTAMP = "2026-03-12T10:30:00.000Z"
SEED_NONCE = "nonce_demo_123"
# What the seed's Node snippet prints for secret 'tsk_xxx', POST /v1/payloads, the timestamp and nonce above
# (node v20: crypto.createHmac('sha256', secret).update(canonical).digest('base64url')).
SEED_SIGNATURE = "HNlnDkrvpLXKwPBqNBxKLRCXm4mMsv2UdBre1OOKzbM"

# The seed's example, with the agent, secret, path and nonce taken from the environment.
NODE_SNIPPET = """
import crypto from 'node:crypto';
const agentId = process.env.AGENT_ID;
const secret = process.env.SECRET;
const timestamp = new Date().toISOString();
const nonce = process.env.NONCE;
const path = process.env.SIGN_PATH;
const canonical = ['POST', path, timestamp, nonce].join('\\n');
const signature = crypto.createHmac('sha256', secret).update(canonical).digest('base64url');
const authorization = `Bearer ${agentId}:${timestamp}:${nonce}:${signature}`;
console.log(JSON.stringify({ timestamp, authorization }));
"""


async def _probe(request: web.Request) -> web.Response:
    record = await verify_agent(request, request.app[GATEWAY].agents)
    return web.json_response({"agent_id": record.id, "name": record.name})


PROBE_ROUTES: ExtraRoutes = [("POST", PROBE, _probe), ("GET", PROBE + "/{id}", _probe)]


def _worker(make_worker: Callable[..., InProcessWorker], **variables: Any) -> InProcessWorker:
    return make_worker(variables, extra_routes=PROBE_ROUTES, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})


def _store(worker: InProcessWorker) -> AgentStore:
    return worker.app[GATEWAY].agents


def _create(worker: InProcessWorker, name: str = "bot") -> tuple[str, str]:
    record, secret = worker.call(_store(worker).create(name))
    return record.id, secret


def call(
    worker: InProcessWorker, authorization: str | None, method: str = "POST", path: str = PROBE
) -> tuple[int, dict[str, Any]]:
    headers = {} if authorization is None else {"Authorization": authorization}
    data = b"{}" if method == "POST" else None
    req = urllib.request.Request(worker.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _code(result: tuple[int, dict[str, Any]]) -> str | None:
    status, doc = result
    if status == 200:
        return None
    assert status == 401, doc
    error = doc["error"]  # the OpenAI error shape of every other OpenAI-style route
    assert set(error) == {"message", "type", "code", "param"} and error["message"]
    return str(error["code"])


def _node_style_signature(secret: str, method: str, path: str, timestamp: str, nonce: str) -> str:
    """Computed here independently of worker.agents, the way Node's digest('base64url') does."""
    canonical = "\n".join([method, path, timestamp, nonce]).encode()
    digest = hmac.new(secret.encode(), canonical, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_seed_example_signature_is_reproduced() -> None:
    expected = _node_style_signature("tsk_xxx", "POST", "/v1/payloads", SEED_TIMESTAMP, SEED_NONCE)
    assert expected == SEED_SIGNATURE
    assert sign("tsk_xxx", "POST", "/v1/payloads", SEED_TIMESTAMP, SEED_NONCE) == SEED_SIGNATURE
    header = authorization_header(
        "agent_xxx", "tsk_xxx", "POST", "/v1/payloads", timestamp=SEED_TIMESTAMP, nonce=SEED_NONCE
    )
    assert header == f"Bearer agent_xxx:{SEED_TIMESTAMP}:{SEED_NONCE}:{SEED_SIGNATURE}"
    # The timestamp's own colons do not confuse the parser.
    parsed = parse_authorization(header)
    assert (parsed.agent_id, parsed.timestamp, parsed.nonce, parsed.signature) == (
        "agent_xxx",
        SEED_TIMESTAMP,
        SEED_NONCE,
        SEED_SIGNATURE,
    )
    assert parsed.epoch == 1773311400.0
    assert iso_timestamp(1773311400.0) == SEED_TIMESTAMP
    assert iso_timestamp(1773311400.5678) == "2026-03-12T10:30:00.567Z"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_header_made_by_the_seeds_node_code_is_accepted(
    make_worker: Callable[..., InProcessWorker], tmp_path: Path
) -> None:
    worker = _worker(make_worker)
    agent_id, secret = _create(worker)
    script = tmp_path / "sign.mjs"
    script.write_text(NODE_SNIPPET)
    env = {"AGENT_ID": agent_id, "SECRET": secret, "NONCE": "nonce_from_node_1", "SIGN_PATH": PROBE}
    node = shutil.which("node")
    assert node is not None
    out = subprocess.run([node, str(script)], env=env, capture_output=True, timeout=30, check=True)
    produced = json.loads(out.stdout)
    # Our signing helper gives the same bytes for the same inputs.
    assert produced["authorization"] == authorization_header(
        agent_id, secret, "POST", PROBE, timestamp=produced["timestamp"], nonce="nonce_from_node_1"
    )
    assert call(worker, produced["authorization"]) == (200, {"agent_id": agent_id, "name": "bot"})
    assert _code(call(worker, produced["authorization"])) == "nonce_reused"


def test_every_rejection_has_its_own_401_code(make_worker: Callable[..., InProcessWorker]) -> None:
    worker = _worker(make_worker)
    agent_id, secret = _create(worker)
    now = time.time()

    def signed(
        nonce: str,
        *,
        secret_: str = secret,
        agent: str = agent_id,
        method: str = "POST",
        path: str = PROBE,
        at: float | None = None,
    ) -> str:
        stamp = iso_timestamp(time.time() if at is None else at)
        return authorization_header(agent, secret_, method, path, timestamp=stamp, nonce=nonce)

    assert _code(call(worker, None)) == "missing_signature"
    assert _code(call(worker, "")) == "missing_signature"
    for malformed in (
        "Bearer trex_someproxykey",  # a proxy key is not a signature
        f"Basic {agent_id}:{SEED_TIMESTAMP}:n1:{SEED_SIGNATURE}",
        f"Bearer {agent_id}:{SEED_TIMESTAMP}:{SEED_SIGNATURE}",  # no nonce
        f"Bearer {agent_id}:yesterday:n1:{SEED_SIGNATURE}",
        f"Bearer {agent_id}:2026-03-12T10:30:00.000:n1:{SEED_SIGNATURE}",  # no zone
        f"Bearer {agent_id}:2026-02-30T10:30:00.000Z:n1:{SEED_SIGNATURE}",  # no such day
        f"Bearer robot_1:{SEED_TIMESTAMP}:n1:{SEED_SIGNATURE}",
        f"Bearer {agent_id}:{SEED_TIMESTAMP}:n/1:{SEED_SIGNATURE}",
        f"Bearer {agent_id}:{SEED_TIMESTAMP}:n1:{SEED_SIGNATURE}==",
    ):
        assert _code(call(worker, malformed)) == "malformed_signature", malformed

    assert _code(call(worker, signed("n-old", at=now - 301))) == "timestamp_out_of_range"
    assert _code(call(worker, signed("n-future", at=now + 301))) == "timestamp_out_of_range"
    assert _code(call(worker, signed("n-unknown", agent="agent_00000000deadbeef"))) == "unknown_agent"

    # A wrong secret, or a signature for another method or path, is invalid — and burns no nonce.
    assert _code(call(worker, signed("n-1", secret_="tsk_" + "x" * 43))) == "invalid_signature"
    assert _code(call(worker, signed("n-1", path="/v1/payloads"))) == "invalid_signature"
    assert _code(call(worker, signed("n-1", method="GET"))) == "invalid_signature"
    header = signed("n-1", at=now - 290)  # inside the window
    stranger = agent_id[:-1] + ("1" if agent_id.endswith("0") else "0")
    assert _code(call(worker, header.replace(agent_id, stranger))) == "unknown_agent"
    assert call(worker, header) == (200, {"agent_id": agent_id, "name": "bot"})
    assert _code(call(worker, header)) == "nonce_reused"
    assert _code(call(worker, signed("n-1"))) == "nonce_reused"  # a nonce is single-use, whatever the time
    assert _code(call(worker, signed("n-2", at=now + 290))) is None

    # GET with a path parameter signs the path as sent; the query string is not signed.
    assert (
        _code(call(worker, signed("n-3", method="GET", path=PROBE + "/tz_1"), "GET", PROBE + "/tz_1")) is None
    )
    get_header = signed("n-4", method="GET", path=PROBE + "/tz_1")
    assert _code(call(worker, get_header, "GET", PROBE + "/tz_1?expand=1")) is None

    worker.call(_store(worker).set_state(agent_id, "suspended"))
    assert _code(call(worker, signed("n-5"))) == "agent_suspended"
    worker.call(_store(worker).set_state(agent_id, "active"))
    assert _code(call(worker, signed("n-5"))) is None
    worker.call(_store(worker).set_state(agent_id, "revoked"))
    assert _code(call(worker, signed("n-6"))) == "agent_revoked"


def test_nonce_is_kept_for_the_whole_skew_window(make_worker: Callable[..., InProcessWorker]) -> None:
    worker = _worker(make_worker, AGENT_SIGNATURE_SKEW_SECONDS=120)
    agent_id, secret = _create(worker)
    now = time.time()
    for nonce, offset, code in (("a", -130, "timestamp_out_of_range"), ("b", -110, None), ("c", 110, None)):
        header = authorization_header(
            agent_id, secret, "POST", PROBE, timestamp=iso_timestamp(now + offset), nonce=nonce
        )
        assert _code(call(worker, header)) == code, nonce
    page = worker.call(worker.app[GATEWAY].kv.list(prefix=f"nonce/{agent_id}/"))
    assert [k.name.rsplit("/", 1)[1] for k in page.keys] == ["b", "c"]
    for info in page.keys:
        # A request stamped up to 120 s ahead stays acceptable until 120 s after its stamp.
        assert info.expiration is not None and info.expiration >= now + 2 * 120


def test_replayed_nonce_is_rejected_by_another_instance(make_worker: Callable[..., InProcessWorker]) -> None:
    first = _worker(make_worker)
    second = _worker(make_worker)  # same config, same SQLite file
    assert first.config.kv_url == second.config.kv_url and first.config.kv_url.startswith("sqlite:///")
    agent_id, secret = _create(first)

    header = authorization_header(agent_id, secret, "POST", PROBE)
    assert _code(call(first, header)) is None
    assert _code(call(second, header)) == "nonce_reused"
    assert _code(call(second, authorization_header(agent_id, secret, "POST", PROBE))) is None

    # The same signed request sent to both instances at once is admitted exactly once.
    for _ in range(5):
        header = authorization_header(agent_id, secret, "POST", PROBE)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(call, [first, second] * 4, [header] * 8))
        codes = [_code(r) for r in results]
        assert sorted(codes, key=str) == [None] + ["nonce_reused"] * 7

    # A state change made through one instance is seen by the other within its 1 s cache.
    worker_two_saw = _code(call(second, authorization_header(agent_id, secret, "POST", PROBE)))
    assert worker_two_saw is None
    first.call(_store(first).set_state(agent_id, "suspended"))
    deadline = time.monotonic() + 1.5
    while (code := _code(call(second, authorization_header(agent_id, secret, "POST", PROBE)))) is None:
        assert time.monotonic() < deadline, "the second instance still admits a suspended agent"
        time.sleep(0.05)
    assert code == "agent_suspended"


def test_secret_is_never_stored_in_clear_text(make_worker: Callable[..., InProcessWorker]) -> None:
    worker = _worker(make_worker)
    agent_id, secret = _create(worker)
    assert agent_id.startswith("agent_") and secret.startswith("tsk_") and len(secret) >= 40
    assert _code(call(worker, authorization_header(agent_id, secret, "POST", PROBE))) is None
    worker.stop()  # closes the KV, so everything is in the SQLite files
    db = Path(worker.config.kv_url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert f"agents/{agent_id}".encode() in stored  # the record is there …
    assert secret.encode() not in stored  # … but not the secret,
    assert secret[12:].encode() not in stored  # nor its part past the listed prefix
    assert base64.b64encode(secret.encode()) not in stored


def test_wrong_master_key_is_a_server_error_not_a_401(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    worker = _worker(make_worker)
    agent_id, secret = _create(worker)
    worker.stop()
    other = make_worker(extra_routes=PROBE_ROUTES, dev_vars={"TREX_MASTER_KEY": "m" * 40})
    status, doc = call(other, authorization_header(agent_id, secret, "POST", PROBE))
    assert status == 500 and doc["error"]["code"] == "master_key_error"
    assert secret not in json.dumps(doc)


def test_store_rejects_bad_input_directly() -> None:
    with pytest.raises(AuthenticationError) as info:
        parse_authorization(f"Bearer agent_a:{SEED_TIMESTAMP}:n:")
    assert info.value.code == "malformed_signature" and info.value.status == 401


def test_agents_from_the_command_line(
    tmp_path: Path, make_worker: Callable[..., InProcessWorker], config_path: Path
) -> None:
    cfg = str(config_path)
    assert "agents" in trex("--help").stdout.decode()
    created = trex("agents", "create", "--name", "billing-bot", "--config", cfg)
    assert created.returncode == 0, created.stderr
    assert b"generated a new TREX_MASTER_KEY" in created.stderr
    text = created.stdout.decode()
    assert "agent_id: agent_" in text and "secret:   tsk_" in text and "not shown again" in text

    out = trex("agents", "create", "--name", "search-bot", "--config", cfg, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    agent_id, secret = doc["agent_id"], doc["secret"]
    assert agent_id.startswith("agent_") and secret.startswith("tsk_") and secret.startswith(doc["prefix"])
    assert doc["state"] == "active" and doc["name"] == "search-bot"

    listed = json.loads(trex("agents", "list", "--config", cfg, "--json").stdout)["agents"]
    assert sorted(a["name"] for a in listed) == ["billing-bot", "search-bot"]
    assert all("secret" not in a for a in listed) and secret not in json.dumps(listed)
    table = trex("agents", "list", "--config", cfg).stdout.decode()
    assert agent_id in table and "search-bot" in table and secret not in table

    # A worker on the same config (its .dev.vars holds the generated master key) verifies the secret.
    worker = make_worker(extra_routes=PROBE_ROUTES)
    assert call(worker, authorization_header(agent_id, secret, "POST", PROBE)) == (
        200,
        {"agent_id": agent_id, "name": "search-bot"},
    )

    def state_change(action: str) -> subprocess.CompletedProcess[bytes]:
        return trex("agents", action, agent_id, "--config", cfg, "--json")

    suspended = state_change("suspend")
    assert suspended.returncode == 0 and json.loads(suspended.stdout) == {
        "agent_id": agent_id,
        "state": "suspended",
    }
    deadline = time.monotonic() + 1.5
    while _code(call(worker, authorization_header(agent_id, secret, "POST", PROBE))) is None:
        assert time.monotonic() < deadline, "a suspended agent is still admitted"
        time.sleep(0.05)
    assert _code(call(worker, authorization_header(agent_id, secret, "POST", PROBE))) == "agent_suspended"

    assert state_change("activate").returncode == 0
    assert state_change("revoke").returncode == 0
    again = state_change("activate")
    assert again.returncode == 1 and b"revoked" in again.stderr
    missing = trex("agents", "suspend", "agent_00000000deadbeef", "--config", cfg)
    assert missing.returncode == 1 and b"No agent" in missing.stderr


ADMIN_TOKEN = "adm_" + "q" * 40


def _admin(worker: InProcessWorker, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return admin_call(worker, method, path, body, token=ADMIN_TOKEN)


def test_agents_lifecycle_through_the_admin_api(make_worker: Callable[..., InProcessWorker]) -> None:
    worker = make_worker(
        extra_routes=PROBE_ROUTES,
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    assert admin_call(worker, "GET", "/admin/v1/agents", token="adm_" + "x" * 40)[0] == 401
    status, created = _admin(worker, "POST", "/admin/v1/agents", {"name": "  ingest-bot "})
    assert status == 201 and created["object"] == "agent" and created["name"] == "ingest-bot"
    agent_id, secret = created["id"], created["secret"]
    assert agent_id.startswith("agent_") and secret.startswith("tsk_") and created["state"] == "active"
    # The secret works at once for signed requests, and is never shown again.
    assert _code(call(worker, authorization_header(agent_id, secret, "POST", PROBE))) is None
    status, listed = _admin(worker, "GET", "/admin/v1/agents")
    assert [a["id"] for a in listed["data"]] == [agent_id] and secret not in json.dumps(listed)
    status, one = _admin(worker, "GET", f"/admin/v1/agents/{agent_id}")
    assert status == 200 and one["prefix"] == secret[:12] and "secret" not in one

    status, changed = _admin(worker, "PATCH", f"/admin/v1/agents/{agent_id}", {"state": "suspended"})
    assert status == 200 and changed["state"] == "suspended"
    assert _code(call(worker, authorization_header(agent_id, secret, "POST", PROBE))) == "agent_suspended"
    for bad in ({"state": "paused"}, {}, {"name": "x"}):
        status, doc = _admin(worker, "PATCH", f"/admin/v1/agents/{agent_id}", bad)
        assert status == 400 and doc["error"]["param"] in ("state", "name")
    assert _admin(worker, "PATCH", f"/admin/v1/agents/{agent_id}", {"state": "revoked"})[0] == 200
    status, doc = _admin(worker, "PATCH", f"/admin/v1/agents/{agent_id}", {"state": "active"})
    assert status == 409  # revoked is final
    assert _admin(worker, "POST", "/admin/v1/agents", {"name": " "})[0] == 400
    assert _admin(worker, "GET", "/admin/v1/agents/agent_0000000000000000")[0] == 404

    status, deleted = _admin(worker, "DELETE", f"/admin/v1/agents/{agent_id}")
    assert status == 200 and deleted == {"id": agent_id, "object": "agent", "deleted": True}
    assert _code(call(worker, authorization_header(agent_id, secret, "POST", PROBE))) == "unknown_agent"
    assert _admin(worker, "GET", "/admin/v1/agents")[1]["data"] == []
