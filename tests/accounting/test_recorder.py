"""The usage recorder's writes: what reaches the KV when, on a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kv import KVUnavailableError, ManualClock, SqliteKV
from worker.accounting.claims import NO_CLAIMS
from worker.accounting.events import PREFIX, Begun, UsageRecorder
from worker.accounting.pricing import PriceTable
from worker.auth import KeyRecord

BODY = b'{"id":"c","usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}'
KEY = KeyRecord(id="key_rec", name="r", hash="h", prefix="trex_r", created=1)


async def _stored(kv: SqliteKV) -> dict[str, str]:
    page = await kv.list(prefix=PREFIX)
    return {info.name.rsplit("/", 1)[-1]: info.metadata["s"] for info in page.keys}  # type: ignore[index]


def _begin(recorder: UsageRecorder) -> Begun:
    return recorder.begin(
        key=KEY,
        route="/v1/chat/completions",
        provider="openai",
        model="gpt-4o-mini",
        upstream_model="gpt-4o-mini",
        stream=False,
        session_id=None,
        original_tokens=12,
        optimized_tokens=12,
        encoding="o200k_base",
        estimated=False,
        bytes_before=80,
        bytes_after=80,
        claims=NO_CLAIMS,
        overhead_ms=0.1,
        started=0.0,
    )


async def test_a_short_request_is_written_once_final_and_a_long_one_pending_after_an_interval(
    tmp_path: Path,
) -> None:
    clock = ManualClock(1_800_000_000)
    kv = SqliteKV(tmp_path / "kv.sqlite3", clock=clock)
    recorder = UsageRecorder(kv, PriceTable(), {}, retention_seconds=86400, flush_seconds=1, clock=clock)

    def begin() -> Begun:
        return _begin(recorder)

    short, long = begin(), begin()
    await recorder.flush(in_flight=False)  # the periodic flush: both just began
    assert await _stored(kv) == {}
    recorder.complete(short, http_status=200, outcome="completed", wire="chat", body=BODY)
    clock.advance(2)
    await recorder.flush(in_flight=False)
    assert await _stored(kv) == {short.event.id: "final", long.event.id: "pending"}
    recorder.complete(long, http_status=200, outcome="completed", wire="chat", body=BODY)
    third = begin()
    await recorder.flush()  # a read's or the shutdown's flush writes what is in flight too
    assert await _stored(kv) == {short.event.id: "final", long.event.id: "final", third.event.id: "pending"}
    await kv.close()


async def test_the_request_log_is_newest_first_within_one_millisecond_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kv = SqliteKV(tmp_path / "kv.sqlite3")
    recorder = UsageRecorder(kv, PriceTable(), {}, retention_seconds=86400, flush_seconds=1)
    monkeypatch.setattr("worker.accounting.events.time.time", lambda: 1_700_000_000.0)  # one millisecond
    # Request ids sort oldest first here: the order must come from when each entry was logged.
    for rid, route in (("req_a", "/first"), ("req_b", "/second"), ("req_c", "/third")):
        recorder.log(rid, KEY.id, "POST", route, 200, 1.0, None)
    monkeypatch.undo()
    entries, cursor = await recorder.logs(KEY.id, limit=10, cursor=None)
    assert [e["route"] for e in entries] == ["/third", "/second", "/first"] and cursor is None
    recorder.log("req_z", KEY.id, "GET", "/fourth", 200, 1.0, None)  # a later flush, a later entry
    entries, _ = await recorder.logs(KEY.id, limit=10, cursor=None)
    assert [e["route"] for e in entries] == ["/fourth", "/third", "/second", "/first"]
    await kv.close()


class _PausingKV(SqliteKV):
    """A real SQLite KV whose next batch write waits until released: a request can finish mid-flush."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writing, self.release = asyncio.Event(), asyncio.Event()

    async def put_many(self, entries: Any, **kw: Any) -> None:
        if not self.release.is_set():
            self.writing.set()
            await self.release.wait()
        await super().put_many(entries, **kw)


async def test_a_request_that_completes_during_a_flush_is_logged_with_its_final_numbers(
    tmp_path: Path,
) -> None:
    kv = _PausingKV(tmp_path / "kv.sqlite3")
    recorder = UsageRecorder(kv, PriceTable(), {}, retention_seconds=86400, flush_seconds=1)
    first, late = _begin(recorder), _begin(recorder)
    recorder.complete(first, http_status=200, outcome="completed", wire="chat", body=BODY)
    recorder.log("req_first", KEY.id, "POST", "/v1/chat/completions", 200, 1.0, first)
    flushing = asyncio.ensure_future(recorder.flush())
    await kv.writing.wait()  # the flush is writing events: this request ends now
    recorder.complete(late, http_status=200, outcome="completed", wire="chat", body=BODY)
    recorder.log("req_late", KEY.id, "POST", "/v1/chat/completions", 200, 1.0, late)
    kv.release.set()
    await flushing
    entries, _ = await recorder.logs(KEY.id, limit=10, cursor=None)
    billed = {e["request_id"]: (e["billed_input_tokens"], e["billed_output_tokens"]) for e in entries}
    assert billed == {"req_first": (12, 5), "req_late": (12, 5)}
    await kv.close()


async def test_a_flush_cut_off_by_a_shutdown_loses_nothing(tmp_path: Path) -> None:
    """A shutdown cancels the loop's flush while it writes: the next flush (the one at close) still writes the
    events and the request-log entries it had taken."""
    kv = _PausingKV(tmp_path / "kv.sqlite3")
    recorder = UsageRecorder(kv, PriceTable(), {}, retention_seconds=86400, flush_seconds=1)
    begun = _begin(recorder)
    recorder.complete(begun, http_status=200, outcome="completed", wire="chat", body=BODY)
    recorder.log("req_cut", KEY.id, "POST", "/v1/chat/completions", 200, 1.0, begun)
    flushing = asyncio.ensure_future(recorder.flush())
    await kv.writing.wait()
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    kv.release.set()
    await recorder.flush()
    assert await _stored(kv) == {begun.event.id: "final"}
    entries, _ = await recorder.logs(KEY.id, limit=10, cursor=None)
    assert [(e["request_id"], e["billed_input_tokens"]) for e in entries] == [("req_cut", 12)]
    await kv.close()


async def test_a_request_that_completes_within_an_interval_is_written_once_across_a_second_boundary(
    tmp_path: Path,
) -> None:
    """A request begun a moment before a new second is as young at the periodic flush as any other: it is not
    written pending (its event's `created` is the second it began in; the flush must not judge by that)."""
    clock = ManualClock(1_800_000_000.9)
    kv = SqliteKV(tmp_path / "kv.sqlite3", clock=clock)
    recorder = UsageRecorder(kv, PriceTable(), {}, retention_seconds=86400, flush_seconds=1, clock=clock)
    begun = _begin(recorder)
    clock.advance(0.2)
    await recorder.flush(in_flight=False)
    assert await _stored(kv) == {}
    recorder.complete(begun, http_status=200, outcome="completed", wire="chat", body=BODY)
    clock.advance(1)
    await recorder.flush(in_flight=False)
    assert await _stored(kv) == {begun.event.id: "final"}
    await kv.close()


class _DownKV(SqliteKV):
    """A store that takes no writes (an outage that outlasts the shutdown)."""

    async def put_many(self, *args: Any, **kwargs: Any) -> None:
        raise KVUnavailableError("the store is down")

    async def incr_many(self, *args: Any, **kwargs: Any) -> list[int]:
        raise KVUnavailableError("the store is down")


async def test_a_shutdown_the_store_refuses_names_every_event_it_loses_still_running_ones_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kv = _DownKV(tmp_path / "kv.sqlite3")
    recorder = UsageRecorder(kv, PriceTable(), {}, retention_seconds=86400, flush_seconds=1)
    done = _begin(recorder)
    recorder.complete(done, http_status=200, outcome="completed", wire="chat", body=BODY)
    _begin(recorder), _begin(recorder)  # still running at shutdown: written pending, or lost
    with caplog.at_level("ERROR"):
        await recorder.close()
    assert "3 usage events" in caplog.text, caplog.text
    await kv.close()


async def test_a_long_answer_without_usage_has_its_output_counted_off_the_loop_and_written_final(
    tmp_path: Path,
) -> None:
    # Past 64 KiB of text the output tokens are counted in a thread; the event ends as any other estimate.
    from worker import tokens

    kv = SqliteKV(tmp_path / "kv.sqlite3")
    recorder = UsageRecorder(kv, PriceTable(), {}, retention_seconds=86400, flush_seconds=1)
    text = "lorem ipsum dolor sit amet " * 3000
    body = (
        b'{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"'
        + text.encode()
        + b'"}}]}'
    )
    short_body = b'{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}'
    long, short = _begin(recorder), _begin(recorder)
    recorder.complete(long, http_status=200, outcome="completed", wire="chat", body=body)
    recorder.complete(short, http_status=200, outcome="completed", wire="chat", body=short_body)
    await recorder.flush()
    assert await _stored(kv) == {long.event.id: "final", short.event.id: "final"}
    for begun, answer in ((long, text), (short, "ok")):
        event = await recorder.get(KEY.id, begun.event.id)
        assert event is not None and event.billed is not None
        assert (event.usage_source, event.billed.input_tokens) == ("estimated", 12)
        assert event.billed.output_tokens == tokens.count(answer, "o200k_base")
    await kv.close()


async def test_the_metadata_of_events_and_log_entries_holds_every_field_in_order(tmp_path: Path) -> None:
    kv = SqliteKV(tmp_path / "kv.sqlite3")
    recorder = UsageRecorder(kv, PriceTable(), {}, retention_seconds=86400, flush_seconds=1)
    begun = _begin(recorder)
    recorder.complete(begun, http_status=200, outcome="completed", wire="chat", body=BODY)
    recorder.log("req_1", KEY.id, "POST", "/v1/chat/completions", 200, 1.5, begun)
    recorder.log("req_2", KEY.id, "GET", "/v1/usage", 200, 0.25, None)
    await recorder.flush()
    ev = begun.event
    assert ev.billed is not None and ev.baseline is not None
    (event,) = (await kv.list(prefix=PREFIX)).keys
    assert list((event.metadata or {}).items()) == [
        ("t", ev.created),
        ("m", "gpt-4o-mini"),
        ("p", "openai"),
        ("s", "final"),
        ("oi", 12),
        ("zi", 12),
        ("bi", 12),
        ("bo", 5),
        ("ci", 0),
        ("st", 0),
        ("bc", ev.baseline.cost_usd),
        ("ac", ev.actual_cost_usd),
        ("sv", 0.0),
    ]
    logs, _ = await recorder.logs(KEY.id, 10, None)
    common = ["time", "request_id", "key_id", "method", "route", "status", "latency_ms"]
    assert [list(entry) for entry in logs] == [
        common,
        [
            *common,
            "model",
            "provider",
            "usage_event_id",
            "original_input_tokens",
            "optimized_input_tokens",
            "billed_input_tokens",
            "billed_output_tokens",
            "savings_tokens",
            "savings_usd",
        ],
    ]
    assert [(e["request_id"], e["route"], e["latency_ms"]) for e in logs] == [
        ("req_2", "/v1/usage", 0.25),
        ("req_1", "/v1/chat/completions", 1.5),
    ]
    assert logs[1]["usage_event_id"] == ev.id and logs[1]["billed_output_tokens"] == 5
    await kv.close()
