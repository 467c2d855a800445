"""Workers KV contract, run unchanged against every backend."""

from __future__ import annotations

import asyncio
import base64

import msgspec
import pytest

from kv import (
    InvalidExpirationError,
    InvalidKeyError,
    InvalidListArgumentError,
    InvalidMetadataError,
    KeyInfo,
    KVClosedError,
    KVError,
    KVNamespace,
    ManualClock,
    ValueTooLargeError,
    struct_metadata,
)

MIB = 1024 * 1024


async def list_all(kv: KVNamespace, *, prefix: str = "", limit: int = 1000) -> list[KeyInfo]:
    """Follow cursors until list_complete, checking page shape along the way."""
    keys: list[KeyInfo] = []
    cursor: str | None = None
    while True:
        page = await kv.list(prefix=prefix, limit=limit, cursor=cursor)
        keys += page.keys
        if page.list_complete:
            assert page.cursor is None
            return keys
        assert len(page.keys) == limit
        assert page.cursor is not None
        cursor = page.cursor


async def names(kv: KVNamespace, *, prefix: str = "", limit: int = 1000) -> list[str]:
    """Every live key name under ``prefix``, in list order."""
    return [info.name for info in await list_all(kv, prefix=prefix, limit=limit)]


# -- basic operations ----------------------------------------------------------------------


async def test_roundtrip_bytes_and_str(kv: KVNamespace) -> None:
    """Bytes are stored verbatim and str values are stored as UTF-8."""
    assert await kv.get("missing") is None
    await kv.put("bin", b"\x00\xff\x10")
    await kv.put("text", "héllo €")
    await kv.put("empty", b"")
    assert await kv.get("bin") == b"\x00\xff\x10"
    assert await kv.get("text") == "héllo €".encode()
    assert await kv.get_text("text") == "héllo €"
    assert await kv.get("empty") == b""
    assert await kv.get_text("missing") is None


async def test_json_helpers(kv: KVNamespace) -> None:
    """put_json/get_json round-trip through compact JSON."""
    await kv.put_json("doc", {"a": [1, 2, {"b": None}], "c": "é"}, metadata={"kind": "doc"})
    assert await kv.get_json("doc") == {"a": [1, 2, {"b": None}], "c": "é"}
    assert await kv.get_with_metadata("doc") == (b'{"a":[1,2,{"b":null}],"c":"\xc3\xa9"}', {"kind": "doc"})
    assert await kv.get_json("missing") is None


async def test_delete(kv: KVNamespace) -> None:
    """delete removes a key and is a no-op for missing keys."""
    await kv.put("k", "v")
    await kv.delete("k")
    assert await kv.get("k") is None
    assert await names(kv) == []
    await kv.delete("k")
    await kv.delete("never-existed")


async def test_metadata_roundtrip(kv: KVNamespace) -> None:
    """Metadata comes back from get_with_metadata and from list."""
    metadata = {"model": "gpt", "tokens": 12, "nested": {"ok": True, "list": [1.5, None]}}
    await kv.put("with", b"v", metadata=metadata)
    await kv.put("without", b"v")
    assert await kv.get_with_metadata("with") == (b"v", metadata)
    assert await kv.get_with_metadata("without") == (b"v", None)
    assert await kv.get_with_metadata("missing") == (None, None)
    assert (await kv.list()).keys == [
        KeyInfo(name="with", expiration=None, metadata=metadata),
        KeyInfo(name="without", expiration=None, metadata=None),
    ]


async def test_overwrite_replaces_value_metadata_and_expiration(kv: KVNamespace, clock: ManualClock) -> None:
    """A put replaces everything, including dropping an old expiration."""
    await kv.put("k", b"old", metadata={"v": 1}, expiration_ttl=60)
    await kv.put("k", b"new", metadata={"v": 2})
    assert await kv.get_with_metadata("k") == (b"new", {"v": 2})
    await kv.put("k", b"newer")
    assert await kv.get_with_metadata("k") == (b"newer", None)
    clock.advance(3600)
    assert await kv.get("k") == b"newer"
    assert (await kv.list()).keys == [KeyInfo(name="k", expiration=None, metadata=None)]


async def test_closed_namespace_rejects_calls(kv: KVNamespace) -> None:
    """close is idempotent and later calls fail loudly."""
    await kv.put("k", "v")
    await kv.close()
    await kv.close()
    with pytest.raises(KVClosedError):
        await kv.get("k")
    with pytest.raises(KVClosedError):
        await kv.put("k", "v")
    with pytest.raises(KVClosedError):
        await kv.list()


# -- expiration ----------------------------------------------------------------------------


async def test_expiration_ttl_hides_key(kv: KVNamespace, clock: ManualClock) -> None:
    """A TTL key is visible until the clock reaches its expiration."""
    await kv.put("short", b"v", expiration_ttl=60, metadata={"m": 1})
    await kv.put("forever", b"v")
    expected_expiration = int(clock.now) + 60
    assert (await kv.list()).keys == [
        KeyInfo(name="forever", expiration=None, metadata=None),
        KeyInfo(name="short", expiration=expected_expiration, metadata={"m": 1}),
    ]
    clock.advance(59)
    assert await kv.get("short") == b"v"
    clock.advance(1)
    assert await kv.get("short") is None
    assert await kv.get_with_metadata("short") == (None, None)
    assert await names(kv) == ["forever"]


async def test_absolute_expiration_hides_key(kv: KVNamespace, clock: ManualClock) -> None:
    """An absolute expiration is reported as int epoch seconds and hides the key."""
    expiration = int(clock.now) + 120
    await kv.put("abs", "v", expiration=expiration)
    [info] = (await kv.list()).keys
    assert info.expiration == expiration
    assert isinstance(info.expiration, int)
    clock.advance(119)
    assert await kv.get("abs") == b"v"
    clock.advance(1)
    assert await kv.get("abs") is None
    assert await names(kv) == []


async def test_fractional_clock_rounds_ttl_up(kv: KVNamespace, clock: ManualClock) -> None:
    """A TTL never makes a key expire sooner than requested."""
    clock.advance(0.5)
    await kv.put("k", "v", expiration_ttl=60)
    [info] = (await kv.list()).keys
    assert info.expiration == int(clock.now) + 61
    clock.advance(60)
    assert await kv.get("k") == b"v"


async def test_expiration_limits(kv: KVNamespace, clock: ManualClock) -> None:
    """TTL/expiration must be ints at least 60 s ahead, and not both."""
    now = int(clock.now)
    with pytest.raises(InvalidExpirationError):
        await kv.put("k", "v", expiration_ttl=59)
    with pytest.raises(InvalidExpirationError):
        await kv.put("k", "v", expiration=now - 10)
    with pytest.raises(InvalidExpirationError):
        await kv.put("k", "v", expiration=now + 59)
    with pytest.raises(InvalidExpirationError):
        await kv.put("k", "v", expiration_ttl=120, expiration=now + 120)
    with pytest.raises(InvalidExpirationError):
        await kv.put("k", "v", expiration_ttl=60.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidExpirationError):
        await kv.put("k", "v", expiration_ttl=True)
    # Past any date a backend can hold: refused before anything is written (Redis used to replace the value,
    # then fail to set its expiration).
    await kv.put("kept", "old", expiration_ttl=600)
    for far in ({"expiration_ttl": 10**20}, {"expiration": 10**20}, {"expiration_ttl": 200 * 365 * 86400}):
        with pytest.raises(InvalidExpirationError):
            await kv.put("kept", "new", **far)  # type: ignore[arg-type]
    with pytest.raises(InvalidExpirationError):
        await kv.incr("counter", 1, expiration_ttl=10**20)
    assert await kv.get("kept") == b"old" and await kv.get("counter") is None
    await kv.delete("kept")
    assert await kv.get("k") is None
    await kv.put("ttl", "v", expiration_ttl=60)
    await kv.put("abs", "v", expiration=now + 60)
    assert await names(kv) == ["abs", "ttl"]


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", ".", "..", "a" * 513, "€" * 171, "\ud800"],
    ids=["empty", "dot", "dotdot", "513-ascii", "513-multibyte", "lone-surrogate"],
)
async def test_invalid_keys(kv: KVNamespace, key: str) -> None:
    """Illegal keys are rejected by every key-taking method."""
    with pytest.raises(InvalidKeyError):
        await kv.put(key, "v")
    with pytest.raises(InvalidKeyError):
        await kv.get(key)
    with pytest.raises(InvalidKeyError):
        await kv.delete(key)
    with pytest.raises(InvalidKeyError):
        await kv.put_if_absent(key, "v", expiration_ttl=60)


async def test_key_length_limit_counts_utf8_bytes(kv: KVNamespace) -> None:
    """The 512-byte key limit counts UTF-8 bytes, inclusive."""
    key = "€" * 170 + "ab"
    assert len(key.encode()) == 512
    await kv.put(key, "v")
    await kv.put("a" * 512, "w")
    assert await kv.get(key) == b"v"
    assert await names(kv) == ["a" * 512, key]
    await kv.put("...", "dots are fine when not exactly . or ..")


async def test_value_size_limit(kv: KVNamespace) -> None:
    """Values may be exactly 25 MiB but not one byte more."""
    with pytest.raises(ValueTooLargeError):
        await kv.put("big", b"x" * (25 * MIB + 1))
    with pytest.raises(ValueTooLargeError):
        await kv.put("big", "x" * (25 * MIB + 1))
    assert await kv.get("big") is None
    await kv.put("big", b"x" * (25 * MIB))
    value = await kv.get("big")
    assert value is not None and len(value) == 25 * MIB


async def test_metadata_limits(kv: KVNamespace) -> None:
    """Metadata must be a JSON-serializable dict of at most 1024 bytes."""
    fits = {"p": "x" * (1024 - len('{"p":""}'))}
    await kv.put("k", "v", metadata=fits)
    assert await kv.get_with_metadata("k") == (b"v", fits)
    with pytest.raises(InvalidMetadataError):
        await kv.put("k2", "v", metadata={"p": "x" * 1024})
    with pytest.raises(InvalidMetadataError):
        await kv.put("k2", "v", metadata={"p": object()})
    with pytest.raises(InvalidMetadataError):
        await kv.put("k2", "v", metadata=["not", "a", "dict"])  # type: ignore[arg-type]
    assert await kv.get("k2") is None


@pytest.mark.parametrize("limit", [0, 1001, -1, "10", 10.0])
async def test_invalid_list_limit(kv: KVNamespace, limit: object) -> None:
    """list limit must be an int in 1..1000."""
    with pytest.raises(InvalidListArgumentError):
        await kv.list(limit=limit)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "a",
        "QR",  # decodes, but is not the canonical encoding of any key
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),  # not UTF-8
        base64.urlsafe_b64encode(b"k" * 513).decode().rstrip("="),  # longer than any key
        "a b",
    ],
)
async def test_invalid_cursor(kv: KVNamespace, cursor: str) -> None:
    """Cursors list did not produce are rejected."""
    with pytest.raises(InvalidListArgumentError):
        await kv.list(cursor=cursor)


async def test_list_limit_bounds_accepted(kv: KVNamespace) -> None:
    """The limit bounds 1 and 1000 are accepted."""
    for index in range(3):
        await kv.put(f"k{index}", "v")
    one = await kv.list(limit=1)
    assert [info.name for info in one.keys] == ["k0"]
    assert not one.list_complete
    full = await kv.list(limit=1000)
    assert [info.name for info in full.keys] == ["k0", "k1", "k2"]
    assert full.list_complete and full.cursor is None


# -- listing -------------------------------------------------------------------------------


async def test_list_is_utf8_byte_ordered(kv: KVNamespace) -> None:
    """Keys are listed in UTF-8 byte order, across page boundaries too."""
    keys = ["b", "B", "a", "Z", "é", "€", "😀", "aa", "a-", "a0", "~", "ÿ", "Ω", "A", "0", "\x7f"]
    for key in keys:
        await kv.put(key, key)
    expected = sorted(keys, key=lambda key: key.encode())
    assert expected[:3] == ["0", "A", "B"]
    assert await names(kv) == expected
    assert await names(kv, limit=3) == expected


async def test_prefix_is_literal(kv: KVNamespace) -> None:
    """% and _ (and backslash) in a prefix are plain characters."""
    keys = ["a%", "a%b", "a%c", "a_b", "axb", "ab", "a", "b%", "%", "_x", "a\\b"]
    for key in keys:
        await kv.put(key, "v")
    assert await names(kv, prefix="a%") == ["a%", "a%b", "a%c"]
    assert await names(kv, prefix="a_") == ["a_b"]
    assert await names(kv, prefix="%") == ["%"]
    assert await names(kv, prefix="_") == ["_x"]
    assert await names(kv, prefix="a\\") == ["a\\b"]
    assert await names(kv, prefix="a") == sorted(
        (key for key in keys if key.startswith("a")), key=lambda key: key.encode()
    )
    assert await names(kv, prefix="zzz") == []
    assert await names(kv, prefix="") == sorted(keys, key=lambda key: key.encode())


async def test_prefix_with_multibyte_tail(kv: KVNamespace) -> None:
    """Prefixes ending in multi-byte characters select exactly their keys."""
    keys = ["pré", "pré-1", "prê", "pr\U0010ffff", "pr\U0010ffffz", "prz"]
    for key in keys:
        await kv.put(key, "v")
    assert await names(kv, prefix="pré") == ["pré", "pré-1"]
    assert await names(kv, prefix="pr\U0010ffff") == ["pr\U0010ffff", "pr\U0010ffffz"]


async def test_pagination_covers_every_key_once(kv: KVNamespace) -> None:
    """Following cursors yields every key once, in order, with correct flags."""
    wanted = [f"page:{index:02d}" for index in range(25)]
    for key in [*reversed(wanted), "other:1", "pagf", "pag"]:
        await kv.put(key, "v")
    pages = []
    cursor: str | None = None
    while True:
        page = await kv.list(prefix="page:", limit=10, cursor=cursor)
        pages.append(page)
        if page.list_complete:
            break
        cursor = page.cursor
    assert [len(page.keys) for page in pages] == [10, 10, 5]
    assert [page.list_complete for page in pages] == [False, False, True]
    assert pages[-1].cursor is None
    assert all(page.cursor for page in pages[:-1])
    assert [info.name for page in pages for info in page.keys] == wanted


async def test_pagination_exact_multiple_of_limit(kv: KVNamespace) -> None:
    """No empty trailing page when the key count is a multiple of the limit."""
    for index in range(20):
        await kv.put(f"k{index:02d}", "v")
    first = await kv.list(limit=10)
    second = await kv.list(limit=10, cursor=first.cursor)
    assert not first.list_complete
    assert second.list_complete and second.cursor is None
    assert [info.name for info in first.keys + second.keys] == [f"k{index:02d}" for index in range(20)]


async def test_cursor_resumes_after_deleted_key(kv: KVNamespace) -> None:
    """A cursor still works after its last key was deleted."""
    for key in "abcde":
        await kv.put(key, "v")
    first = await kv.list(limit=2)
    await kv.delete("b")
    await kv.put("bb", "v")
    rest = await kv.list(cursor=first.cursor)
    assert [info.name for info in rest.keys] == ["bb", "c", "d", "e"]


async def test_expired_keys_never_listed(kv: KVNamespace, clock: ManualClock) -> None:
    """Expired keys are skipped without shrinking non-final pages."""
    live = []
    for index in range(30):
        key = f"k{index:02d}"
        if index % 3 == 0:
            await kv.put(key, "v", expiration_ttl=60)
        else:
            await kv.put(key, "v", expiration_ttl=600 if index % 2 else None)
            live.append(key)
    clock.advance(61)
    # list_all also checks every incomplete page is full despite the expired gaps.
    assert await names(kv, limit=4) == live
    assert await names(kv, limit=7) == live
    assert await names(kv) == live
    clock.advance(600)
    assert await names(kv, limit=4) == [key for index, key in enumerate(live) if int(key[1:]) % 2 == 0]


async def test_list_complete_when_only_expired_keys_follow(kv: KVNamespace, clock: ManualClock) -> None:
    """Trailing expired keys do not make list report more pages."""
    await kv.put("a", "v")
    await kv.put("b", "v")
    for index in range(40):
        await kv.put(f"c{index:02d}", "v", expiration_ttl=60)
    clock.advance(60)
    page = await kv.list(limit=2)
    assert [info.name for info in page.keys] == ["a", "b"]
    assert page.list_complete and page.cursor is None


# -- put_if_absent -------------------------------------------------------------------------


async def test_put_if_absent_lifecycle(kv: KVNamespace, clock: ManualClock) -> None:
    """put_if_absent wins once, loses while live, and wins again after expiry."""
    assert await kv.put_if_absent("lock", "first", expiration_ttl=60, metadata={"owner": 1}) is True
    assert await kv.put_if_absent("lock", "second", expiration_ttl=60, metadata={"owner": 2}) is False
    assert await kv.get_with_metadata("lock") == (b"first", {"owner": 1})
    clock.advance(59)
    assert await kv.put_if_absent("lock", "second", expiration_ttl=60) is False
    clock.advance(1)
    assert await kv.put_if_absent("lock", "third", expiration_ttl=120) is True
    assert await kv.get_with_metadata("lock") == (b"third", None)
    [info] = (await kv.list()).keys
    assert info.expiration == int(clock.now) + 120


async def test_put_if_absent_respects_permanent_values(kv: KVNamespace, clock: ManualClock) -> None:
    """A value without expiration blocks put_if_absent until deleted."""
    await kv.put("k", "permanent")
    clock.advance(10**6)
    assert await kv.put_if_absent("k", "other", expiration_ttl=60) is False
    assert await kv.get("k") == b"permanent"
    await kv.delete("k")
    assert await kv.put_if_absent("k", "other", expiration_ttl=60) is True


async def test_put_if_absent_validates(kv: KVNamespace) -> None:
    """put_if_absent applies the same validation as put and requires a TTL."""
    with pytest.raises(InvalidExpirationError):
        await kv.put_if_absent("k", "v", expiration_ttl=59)
    with pytest.raises(InvalidExpirationError):
        await kv.put_if_absent("k", "v", expiration_ttl=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidMetadataError):
        await kv.put_if_absent("k", "v", expiration_ttl=60, metadata={"x": "y" * 2000})
    assert await kv.get("k") is None


async def test_put_if_absent_concurrent_single_winner(kv: KVNamespace) -> None:
    """Concurrent put_if_absent calls on one key have exactly one winner."""
    results = await asyncio.gather(
        *(kv.put_if_absent("race", f"contender-{index}", expiration_ttl=60) for index in range(20))
    )
    assert results.count(True) == 1
    assert await kv.get_text("race") == f"contender-{results.index(True)}"


async def test_put_many_writes_values_metadata_and_ttl(kv: KVNamespace, clock: ManualClock) -> None:
    entries: list[tuple[str, bytes | str, dict[str, object] | None]] = [
        (f"batch/{i:04d}", f"value {i}", {"n": i} if i % 2 else None) for i in range(1203)
    ]
    entries.append(("batch/0001", b"overwritten", {"n": -1}))  # a later entry for the same key wins
    await kv.put_many(entries, expiration_ttl=120)
    found = await list_all(kv, prefix="batch/")
    assert len(found) == 1203
    assert await kv.get_text("batch/0002") == "value 2"
    assert await kv.get_with_metadata("batch/0001") == (b"overwritten", {"n": -1})
    assert found[3].metadata == {"n": 3} and found[4].metadata is None
    clock.advance(121)
    assert await kv.get("batch/0002") is None


async def test_put_many_validates_every_entry_before_writing(kv: KVNamespace) -> None:
    with pytest.raises(InvalidKeyError):
        await kv.put_many([("ok/1", b"x", None), ("", b"y", None)])
    assert await kv.get("ok/1") is None
    await kv.put_many([])  # nothing to do is not an error


class _Meta(msgspec.Struct):
    t: int
    m: str
    x: None = None


async def test_put_many_takes_metadata_already_encoded_from_a_struct(kv: KVNamespace) -> None:
    await kv.put_many(
        [("enc/a", b"1", struct_metadata(_Meta(1, "gpt"))), ("enc/b", b"2", {"t": 2})], expiration_ttl=120
    )
    assert await kv.get_with_metadata("enc/a") == (b"1", {"t": 1, "m": "gpt", "x": None})
    assert [info.metadata for info in (await kv.list(prefix="enc/")).keys] == [
        {"t": 1, "m": "gpt", "x": None},
        {"t": 2},
    ]
    # Plain bytes are not metadata (nothing says they are a JSON object: b"{not json}" would break every
    # later read of the prefix), nor is an encoding past the size limit; nothing is written then.
    for bad in (b'{"t":1}', b"{not json}", b"\xff", struct_metadata(_Meta(1, "x" * 1100))):
        with pytest.raises(InvalidMetadataError):
            await kv.put_many([("enc/c", b"3", None), ("enc/d", b"4", bad)])  # type: ignore[list-item]
    assert await kv.get("enc/c") is None
    with pytest.raises(InvalidMetadataError):
        struct_metadata(_Row(1, 2))  # an array-like Struct is not an object


class _Row(msgspec.Struct, array_like=True):
    a: int
    b: int


async def test_incr_counts_atomically_within_a_fixed_window(kv: KVNamespace, clock: ManualClock) -> None:
    assert await kv.incr("n") == 1
    assert await kv.incr("n", 41) == 42
    assert await kv.incr("n", -50) == -8
    assert await kv.get("n") == b"-8"  # readable as text by get
    # A counter with a TTL keeps the expiration it was created with: a fixed window.
    assert await kv.incr("w", expiration_ttl=60) == 1
    clock.advance(30)
    assert await kv.incr("w", expiration_ttl=600) == 2
    clock.advance(31)
    assert await kv.get("w") is None
    assert await kv.incr("w", expiration_ttl=60) == 1  # a new window
    # Concurrent increments are never lost.
    results = await asyncio.gather(*(kv.incr("c") for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    await kv.put("text", "abc")
    with pytest.raises(KVError):
        await kv.incr("text")
    assert await kv.get("text") == b"abc"
    with pytest.raises(InvalidExpirationError):
        await kv.incr("x", expiration_ttl=5)


async def test_incr_many_counts_each_key_in_one_call(kv: KVNamespace, clock: ManualClock) -> None:
    assert await kv.incr_many(["a", "b"], expiration_ttl=60) == [1, 1]
    assert await kv.incr_many(["b", "a", "c"], 5, expiration_ttl=60) == [6, 6, 5]
    clock.advance(61)
    assert await kv.incr_many(["a", "c"], expiration_ttl=60) == [1, 1]
    results = await asyncio.gather(*(kv.incr_many(["x", "y"]) for _ in range(20)))
    assert sorted(r[0] for r in results) == list(range(1, 21)) and sorted(r[1] for r in results) == list(
        range(1, 21)
    )
    await kv.put("text", "abc")
    with pytest.raises(KVError):
        await kv.incr_many(["ok", "text"])
    with pytest.raises(InvalidKeyError):
        await kv.incr_many(["d", "d"])


async def test_incr_many_takes_a_delta_and_a_ttl_per_key(kv: KVNamespace, clock: ManualClock) -> None:
    assert await kv.incr_many(["p", "q", "r"], [2, 0, -3], expiration_ttl=[60, 600, None]) == [2, 0, -3]
    assert await kv.incr_many(["p", "q"], [1, 7]) == [3, 7]  # later increments keep each row's expiration
    clock.advance(61)
    assert await kv.get("p") is None
    assert await kv.get("q") == b"7" and await kv.get("r") == b"-3"
    clock.advance(600)
    assert await kv.get("q") is None and await kv.get("r") == b"-3"
    with pytest.raises(ValueError):
        await kv.incr_many(["a", "b"], [1])
    with pytest.raises(InvalidExpirationError):
        await kv.incr_many(["a", "b"], expiration_ttl=[60, 5])
    assert await kv.incr_many([]) == []


async def test_incr_many_counts_more_keys_than_one_statement_holds(kv: KVNamespace) -> None:
    keys = [f"many/{i:04d}" for i in range(1203)]
    assert await kv.incr_many(keys, list(range(1203))) == list(range(1203))
    assert await kv.incr_many(keys[::-1]) == list(range(1203, 0, -1))
