"""`/v1/payloads`: the TokenZip lifecycle under HMAC-signed agents, over real HTTP (seed `000_…`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tests import redis_target
from tests.conftest import MASTER_KEY
from tests.harness import InProcessWorker, flush_redis_db, wait_for_a_fresh_minute
from worker.agents import authorization_header
from worker.appkeys import GATEWAY

REDIS_DB = redis_target.url(10)

# The seed's push body, as its Node example sends it (the receiver is filled in per test).
SEED_BODY: dict[str, Any] = {
    "tzp_version": "1.0",
    "payload": {
        "vector_seq_b64": ["AAECAwQ="],
        "quant_params": {"min": -1, "max": 1, "method": "uniform"},
        "dimensions": 384,
        "chunk_count": 1,
        "summary": "demo payload",
    },
    "metadata": {"ttl_seconds": 86400, "allowed_receivers": ["agent_xxx"]},
}


class Agent:
    def __init__(self, worker: InProcessWorker, name: str) -> None:
        record, self.secret = worker.call(worker.app[GATEWAY].agents.create(name))
        self.id = record.id

    def request(
        self, worker: InProcessWorker, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        signed_path = path.split("?", 1)[0]
        headers = {"Authorization": authorization_header(self.id, self.secret, method, signed_path)}
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(worker.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


def _worker(make_worker: Callable[..., InProcessWorker], **kw: Any) -> InProcessWorker:
    return make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY}, **kw)


def _error(result: tuple[int, dict[str, str], bytes]) -> tuple[int, str, str | None]:
    status, _, body = result
    error = json.loads(body)["error"]  # the OpenAI error shape
    assert error["message"]
    return status, error["code"], error["param"]


def _push(agent: Agent, worker: InProcessWorker, body: dict[str, Any]) -> dict[str, Any]:
    status, headers, raw = agent.request(worker, "POST", "/v1/payloads", body)
    assert status == 201, raw
    doc: dict[str, Any] = json.loads(raw)
    assert headers["X-Trex-Id"] == doc["trex_id"]
    return doc


def _seed_body(receivers: list[str]) -> dict[str, Any]:
    body = json.loads(json.dumps(SEED_BODY))
    body["metadata"]["allowed_receivers"] = receivers
    return body


def test_the_seeds_signed_push_is_stored_and_read_back(make_worker: Callable[..., InProcessWorker]) -> None:
    worker = _worker(make_worker)
    sender, receiver, stranger = Agent(worker, "sender"), Agent(worker, "receiver"), Agent(worker, "stranger")
    before = time.time()
    receipt = _push(sender, worker, _seed_body([receiver.id]))
    assert set(receipt) == {"trex_id", "expires_at", "checksum", "created_at", "size_bytes"}
    canonical = json.dumps(SEED_BODY["payload"], sort_keys=True, separators=(",", ":")).encode()
    assert receipt["checksum"] == "sha256:" + hashlib.sha256(canonical).hexdigest()
    assert receipt["size_bytes"] == len(canonical)
    created = datetime.fromisoformat(receipt["created_at"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(receipt["expires_at"].replace("Z", "+00:00"))
    assert created.tzinfo == UTC and before - 1 <= created.timestamp() <= time.time() + 1
    assert abs((expires - created).total_seconds() - 86400) < 0.01

    path = f"/v1/payloads/{receipt['trex_id']}"
    for reader in (sender, receiver):
        status, _, raw = reader.request(worker, "GET", path)
        doc = json.loads(raw)
        assert status == 200 and doc["payload"] == SEED_BODY["payload"] and doc["tzp_version"] == "1.0"
        assert doc["metadata"]["sender"] == sender.id and doc["metadata"]["checksum"] == receipt["checksum"]
        assert doc["metadata"]["allowed_receivers"] == [receiver.id]
    assert _error(stranger.request(worker, "GET", path))[:2] == (403, "not_a_receiver")

    status, headers, raw = receiver.request(worker, "HEAD", path)
    assert status == 200 and raw == b""
    assert headers["X-Trex-Checksum"] == receipt["checksum"]
    assert headers["X-Trex-Expires-At"] == receipt["expires_at"]
    assert headers["X-Trex-Sender"] == sender.id
    assert (headers["X-Trex-Chunk-Count"], headers["X-Trex-Dimensions"]) == ("1", "384")
    assert stranger.request(worker, "HEAD", path)[0] == 403

    assert _error(receiver.request(worker, "DELETE", path))[:2] == (403, "not_the_sender")
    assert sender.request(worker, "DELETE", path)[0] == 204
    for reader in (sender, receiver):
        assert _error(reader.request(worker, "GET", path))[:2] == (404, "payload_not_found")
    assert sender.request(worker, "HEAD", path)[0] == 404
    assert _error(sender.request(worker, "DELETE", path))[:2] == (404, "payload_not_found")
    assert _error(sender.request(worker, "GET", "/v1/payloads/tzp_unknown"))[:2] == (404, "payload_not_found")


def _variant(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = _seed_body([])
    change(body)
    return body


@pytest.mark.parametrize(
    ("change", "code", "param"),
    [
        (lambda b: b.update(tzp_version="2.0"), "unsupported_tzp_version", "tzp_version"),
        (lambda b: b.pop("tzp_version"), "invalid_request", "tzp_version"),
        (lambda b: b["payload"].pop("dimensions"), "invalid_request", "payload.dimensions"),
        (lambda b: b["payload"].update(dimensions="384"), "invalid_request", "payload.dimensions"),
        (lambda b: b["payload"].update(dimensions=0), "invalid_request", "payload.dimensions"),
        (lambda b: b["payload"].update(chunk_count=2), "invalid_request", "payload.vector_seq_b64"),
        (
            lambda b: b["payload"].update(vector_seq_b64=["not base64!"]),
            "invalid_request",
            "payload.vector_seq_b64[0]",
        ),
        (
            lambda b: b["payload"].update(dimensions=4),  # the seed's vector holds 5 bytes
            "invalid_request",
            "payload.vector_seq_b64[0]",
        ),
        (
            lambda b: b["payload"]["quant_params"].update(method="log"),
            "invalid_request",
            "payload.quant_params.method",
        ),
        (lambda b: b["payload"]["quant_params"].update(min=2), "invalid_request", "payload.quant_params.min"),
        (
            lambda b: b["payload"]["quant_params"].update(min=-1e308, max=1e308),  # a span of inf: NaN scores
            "invalid_request",
            "payload.quant_params.max",
        ),
        (lambda b: b["payload"].update(extra=1), "invalid_request", "payload.extra"),
        (lambda b: b.update(extra_top=1), "invalid_request", "extra_top"),
        (lambda b: b["metadata"].update(ttl_seconds=5), "invalid_request", "metadata.ttl_seconds"),
        (
            lambda b: b["metadata"].update(allowed_receivers="agent_x"),
            "invalid_request",
            "metadata.allowed_receivers",
        ),
    ],
)
def test_bad_pushes_are_400s_naming_the_field(
    make_worker: Callable[..., InProcessWorker],
    change: Callable[[dict[str, Any]], None],
    code: str,
    param: str | None,
) -> None:
    worker = _worker(make_worker)
    sender = Agent(worker, "sender")
    status, got_code, got_param = _error(sender.request(worker, "POST", "/v1/payloads", _variant(change)))
    assert (status, got_code, got_param) == (400, code, param)


@pytest.mark.parametrize("written", [{"summary": ""}, {"facts": []}, {"embedding": None}, {"chunks": []}])
def test_a_payload_comes_back_and_is_checksummed_exactly_as_sent(
    make_worker: Callable[..., InProcessWorker], written: dict[str, Any]
) -> None:
    """Optional fields written out with their default value are part of the payload: the checksum a client
    computes over what it sent matches, and a read gives those fields back."""
    worker = _worker(make_worker)
    sender = Agent(worker, "sender")
    body = _seed_body([])
    body["payload"].update(written)
    receipt = _push(sender, worker, body)
    canonical = json.dumps(body["payload"], sort_keys=True, separators=(",", ":")).encode()
    assert receipt["checksum"] == "sha256:" + hashlib.sha256(canonical).hexdigest()
    assert receipt["size_bytes"] == len(canonical)
    status, _, raw = sender.request(worker, "GET", f"/v1/payloads/{receipt['trex_id']}")
    assert status == 200 and json.loads(raw)["payload"] == body["payload"]


def test_unsigned_malformed_and_oversized_pushes(make_worker: Callable[..., InProcessWorker]) -> None:
    worker = _worker(make_worker, variables={"MAX_BODY_BYTES": 4096})
    sender = Agent(worker, "sender")
    req = urllib.request.Request(worker.url + "/v1/payloads", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401 and json.loads(err.value.read())["error"]["code"] == "missing_signature"
    assert _error(sender.request(worker, "POST", "/v1/payloads", raw=b"{not json"))[:2] == (
        400,
        "invalid_json",
    )
    big = _seed_body([])
    big["payload"]["summary"] = "x" * 8000
    assert _error(sender.request(worker, "POST", "/v1/payloads", big))[:2] == (413, "request_too_large")


def test_pushes_past_the_ranking_or_storage_limits_are_refused_not_500s(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    """10,000 one-byte vectors at 384 dimensions (70 KB) are 3.8M floats to rank in pure Python: refused.
    A payload past the KV's 25 MiB value limit (here under a 32 MiB body limit) is a 413, not a 500."""
    worker = _worker(make_worker, variables={"MAX_BODY_BYTES": 32 * 1024 * 1024})
    sender = Agent(worker, "sender")
    wide = _seed_body([])
    wide["payload"].update(vector_seq_b64=["gA=="] * 10_000, chunk_count=10_000)
    status, code, param = _error(sender.request(worker, "POST", "/v1/payloads", wide))
    assert (status, code, param) == (400, "invalid_request", "payload.chunk_count")
    fits = _seed_body([])
    fits["payload"].update(vector_seq_b64=["gA=="] * 5_000, chunk_count=5_000)
    _push(sender, worker, fits)
    big = _seed_body([])
    big["payload"]["summary"] = "x" * (26 * 1024 * 1024)
    status, _, raw = sender.request(worker, "POST", "/v1/payloads", big)
    error = json.loads(raw)["error"]
    assert (status, error["code"]) == (413, "request_too_large"), raw[:300]
    assert "26,214,400" in error["message"]


def test_payloads_expire_by_the_stores_clock(make_worker: Callable[..., InProcessWorker]) -> None:
    worker = _worker(make_worker)
    sender = Agent(worker, "sender")
    body = _seed_body([])
    body["metadata"]["ttl_seconds"] = 120
    trex_id = _push(sender, worker, body)["trex_id"]
    store = worker.app[GATEWAY].payloads
    store.clock = lambda: time.time() + 119
    assert sender.request(worker, "GET", f"/v1/payloads/{trex_id}")[0] == 200
    store.clock = lambda: time.time() + 121
    assert _error(sender.request(worker, "GET", f"/v1/payloads/{trex_id}"))[:2] == (404, "payload_not_found")
    assert sender.request(worker, "HEAD", f"/v1/payloads/{trex_id}")[0] == 404


def test_retrievals_are_rate_limited_but_never_charged(make_worker: Callable[..., InProcessWorker]) -> None:
    worker = _worker(make_worker, variables={"RATE_LIMIT_PER_MINUTE": 3})
    sender = Agent(worker, "sender")
    wait_for_a_fresh_minute()
    trex_id = _push(sender, worker, _seed_body([]))["trex_id"]
    statuses = [sender.request(worker, "GET", f"/v1/payloads/{trex_id}")[0] for _ in range(3)]
    assert statuses == [200, 200, 429]  # the push was the first of the three
    status, headers, _ = sender.request(worker, "GET", f"/v1/payloads/{trex_id}")
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert worker.app[GATEWAY].quotas.plans == {}  # nothing to charge: payload routes never touch quotas


def test_a_revocation_is_seen_by_another_instance_on_redis(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    flush_redis_db(REDIS_DB)
    first = _worker(make_worker, local={"kv_url": REDIS_DB})
    second = _worker(make_worker, local={"kv_url": REDIS_DB})
    sender = Agent(first, "sender")
    receiver = Agent(first, "receiver")
    trex_id = _push(sender, first, _seed_body([receiver.id]))["trex_id"]
    path = f"/v1/payloads/{trex_id}"
    assert receiver.request(second, "GET", path)[0] == 200
    assert sender.request(second, "DELETE", path)[0] == 204
    assert receiver.request(first, "GET", path)[0] == 404  # at once: reads go to the shared store
    encoded = base64.b64encode(bytes(i % 256 for i in range(384))).decode()  # a full-size vector
    full = _seed_body([])
    full["payload"]["vector_seq_b64"] = [encoded]
    assert sender.request(second, "POST", "/v1/payloads", full)[0] == 201


def test_concurrent_revocations_of_one_payload_succeed_once(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    """Revocations racing each other (on one instance or several): one succeeds, the others are 404s."""
    worker = _worker(make_worker)
    sender = Agent(worker, "sender")
    trex_id = _push(sender, worker, _seed_body([]))["trex_id"]
    store = worker.app[GATEWAY].payloads

    async def revoke_all() -> list[BaseException | None]:
        return await asyncio.gather(
            *(store.revoke(trex_id, sender.id) for _ in range(6)), return_exceptions=True
        )

    outcomes = worker.call(revoke_all())
    assert sorted(type(o).__name__ for o in outcomes) == ["NoneType"] + ["PayloadNotFoundError"] * 5
    assert sender.request(worker, "GET", f"/v1/payloads/{trex_id}")[0] == 404


def test_a_revoke_cut_off_after_its_claim_still_revokes_and_a_retry_finishes_it(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    """A revoke claims the payload, then deletes it. One cut off between the two (the KV went away: the
    client got a 503 and was told to retry) has revoked it all the same: every read is a 404, and the retry
    removes what was left (the payload stayed readable for its whole TTL)."""
    worker = _worker(make_worker)
    sender = Agent(worker, "sender")
    receiver = Agent(worker, "receiver")
    trex_id = _push(sender, worker, _seed_body([receiver.id]))["trex_id"]
    kv = worker.app[GATEWAY].kv
    assert receiver.request(worker, "GET", f"/v1/payloads/{trex_id}")[0] == 200
    worker.call(kv.put(f"payloads_revoked/{trex_id}", b"1", expiration_ttl=3600))  # the claim, no delete
    assert receiver.request(worker, "GET", f"/v1/payloads/{trex_id}")[0] == 404
    assert sender.request(worker, "DELETE", f"/v1/payloads/{trex_id}")[0] == 404  # already revoked
    assert worker.call(kv.get(f"payloads/{trex_id}")) is None  # and now removed
