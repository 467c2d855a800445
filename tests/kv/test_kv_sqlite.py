"""SQLite-only behaviour: durability, shared files and cross-process atomicity."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiosqlite

from kv import ManualClock, SqliteKV, open_kv

_CONTENDER = """
import asyncio, json, sys
from kv import open_kv

async def main(url: str, name: str, count: int) -> None:
    kv = await open_kv(url)
    try:
        print("ready", flush=True)
        sys.stdin.readline()
        won = [i for i in range(count) if await kv.put_if_absent(f"key-{i}", name, expiration_ttl=3600)]
        print(json.dumps(won), flush=True)
    finally:
        await kv.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_data_survives_reopen(sqlite_path: Path, clock: ManualClock) -> None:
    """Data outlives the connection that wrote it."""
    url = f"sqlite:///{sqlite_path}"
    first = await open_kv(url, clock=clock)
    await first.put("k", "v", metadata={"a": 1}, expiration_ttl=600)
    await first.close()
    second = await open_kv(url, clock=clock)
    try:
        assert await second.get_with_metadata("k") == (b"v", {"a": 1})
        assert (await second.list()).keys[0].expiration == int(clock.now) + 600
    finally:
        await second.close()


async def test_creates_parent_directories_and_uses_wal(sqlite_path: Path) -> None:
    """Missing parent directories are created and the file is in WAL mode."""
    assert not sqlite_path.parent.exists()
    async with SqliteKV(sqlite_path) as kv:
        await kv.put("k", "v")
        assert await asyncio.to_thread(sqlite_path.exists)
    async with aiosqlite.connect(sqlite_path) as conn:
        [(mode,)] = list(await conn.execute_fetchall("PRAGMA journal_mode"))
    assert mode == "wal"


async def test_stores_keys_as_blobs(sqlite_path: Path) -> None:
    """Keys are stored as BLOBs so SQLite orders them by bytes."""
    async with SqliteKV(sqlite_path) as kv:
        await kv.put("é", "v", metadata={"m": 1})
    async with aiosqlite.connect(sqlite_path) as conn:
        rows = list(await conn.execute_fetchall("SELECT key, typeof(key), metadata FROM kv"))
    assert [tuple(row) for row in rows] == [("é".encode(), "blob", '{"m":1}')]


async def test_every_write_stores_its_key_and_value_as_the_same_blobs(sqlite_path: Path) -> None:
    """Whichever statement writes a row (and however it hands SQLite the bytes), the key and the value are
    BLOBs of exactly the bytes given: an empty value is an empty BLOB, not NULL, and a large one is whole."""
    large = bytes(range(256)) * 64
    async with SqliteKV(sqlite_path) as kv:
        await kv.put("one", b"")
        await kv.put_many([("many/a", b"\x00a", None), ("many/b", large, {"m": 1})], expiration_ttl=600)
        assert await kv.put_if_absent("absent", "x", expiration_ttl=600)
        assert await kv.incr_many(["count/a", "count/b"], [2, 3]) == [2, 3]
        assert await kv.incr_many_once("token", ["count/a"], 5, token_ttl=60) == [7]
        assert await kv.get("many/b") == large
        assert [k.name for k in (await kv.list(prefix="many/")).keys] == ["many/a", "many/b"]
    async with aiosqlite.connect(sqlite_path) as conn:
        rows = list(
            await conn.execute_fetchall(
                "SELECT key, typeof(key), value, typeof(value) FROM kv WHERE key < X'FF' ORDER BY key"
            )
        )
    assert [tuple(row) for row in rows] == [
        (b"absent", "blob", b"x", "blob"),
        (b"count/a", "blob", b"7", "blob"),
        (b"count/b", "blob", b"3", "blob"),
        (b"many/a", "blob", b"\x00a", "blob"),
        (b"many/b", "blob", large, "blob"),
        (b"one", "blob", b"", "blob"),
    ]


async def test_two_instances_share_one_file(sqlite_path: Path, clock: ManualClock) -> None:
    """Two instances on one file see each other's writes and share exclusivity."""
    async with SqliteKV(sqlite_path, clock=clock) as one, SqliteKV(sqlite_path, clock=clock) as two:
        await one.put("from-one", "1")
        await two.put("from-two", "2", metadata={"by": "two"})
        assert await two.get("from-one") == b"1"
        assert await one.get_with_metadata("from-two") == (b"2", {"by": "two"})
        await two.delete("from-one")
        assert await one.get("from-one") is None
        assert [info.name for info in (await one.list()).keys] == ["from-two"]

        results = await asyncio.gather(
            *(
                kv.put_if_absent("lock", f"{index}", expiration_ttl=60)
                for index in range(10)
                for kv in (one, two)
            )
        )
        assert results.count(True) == 1
        clock.advance(60)
        assert await two.put_if_absent("lock", "again", expiration_ttl=60) is True
        assert await one.put_if_absent("lock", "late", expiration_ttl=60) is False
        assert await one.get("lock") == b"again"


async def test_put_if_absent_exclusive_across_processes(tmp_path: Path) -> None:
    """Two processes racing over 50 keys win each key exactly once."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    count = 50
    contenders = ("alpha", "beta")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CONTENDER,
            url,
            name,
            str(count),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in contenders
    ]
    try:
        # Both children open the database first, then start together to maximise contention.
        for proc in procs:
            assert proc.stdout is not None
            assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        outputs = await asyncio.wait_for(asyncio.gather(*(proc.communicate() for proc in procs)), 30)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr.decode()
    won = [set(json.loads(stdout)) for stdout, _ in outputs]
    assert won[0].isdisjoint(won[1])
    assert won[0] | won[1] == set(range(count))

    kv = await open_kv(url)
    try:
        for index in range(count):
            winner = contenders[0] if index in won[0] else contenders[1]
            assert await kv.get_text(f"key-{index}") == winner
    finally:
        await kv.close()


async def test_an_independent_connection_sees_the_same_data_and_writes_alongside(tmp_path: Path) -> None:
    kv = SqliteKV(tmp_path / "kv.db")
    writer = kv.independent()
    assert writer is not kv
    try:
        await kv.put("a", "1")
        # A long batch on the writer while the first connection keeps serving reads.
        batch = [(f"b/{i:05d}", "x" * 500, {"i": i}) for i in range(3000)]
        reads = [kv.get("a") for _ in range(20)]
        results = await asyncio.gather(writer.put_many(batch, expiration_ttl=3600), *reads)
        assert results[1:] == [b"1"] * 20
        assert await writer.get("a") == b"1"
        assert (await kv.get_with_metadata("b/02999")) == (b"x" * 500, {"i": 2999})
    finally:
        await writer.close()
        await kv.close()
    memory = SqliteKV(":memory:")
    assert memory.independent() is memory  # a second :memory: connection would be another database
    await memory.close()


async def test_put_many_of_any_size_writes_every_entry(sqlite_path: Path, clock: ManualClock) -> None:
    """`put_many` splits a batch into statements of a few fixed sizes (in one transaction): every size, below,
    at and above the largest, writes every entry with its value, metadata and expiration; a key given twice
    keeps its last entry, as one multi-row statement would."""
    async with SqliteKV(sqlite_path, clock=clock) as kv:
        for size in (*range(1, 70), 127, 128, 129, 200, 511, 1001):
            entries = [(f"b{size}/{i:04d}", f"v{size}.{i}".encode(), {"i": i}) for i in range(size)]
            await kv.put_many(entries, expiration_ttl=600 + size)
        await kv.put_many([("dup", b"first", None), ("dup", b"last", {"n": 2}), ("other", b"o", None)])
        for size in (1, 37, 64, 129, 1001):
            page = await kv.list(prefix=f"b{size}/", limit=1000)
            names = [k.name for k in page.keys]
            if not page.list_complete:
                page = await kv.list(prefix=f"b{size}/", limit=1000, cursor=page.cursor)
                names += [k.name for k in page.keys]
            assert names == [f"b{size}/{i:04d}" for i in range(size)]
            assert {k.expiration for k in page.keys} == {int(clock.now) + 600 + size}
            assert await kv.get_with_metadata(f"b{size}/{size - 1:04d}") == (
                f"v{size}.{size - 1}".encode(),
                {"i": size - 1},
            )
        assert await kv.get_with_metadata("dup") == (b"last", {"n": 2})
    async with aiosqlite.connect(sqlite_path) as conn:
        [(count,)] = list(await conn.execute_fetchall("SELECT count(*) FROM kv"))
    assert count == sum((*range(1, 70), 127, 128, 129, 200, 511, 1001)) + 2
