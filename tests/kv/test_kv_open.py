"""URL parsing of ``open_kv``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kv import KVError, KVUnavailableError, MemoryKV, RedisKV, SqliteKV, open_kv
from tests import redis_target


async def test_memory_url() -> None:
    """memory:// opens an in-process namespace."""
    kv = await open_kv("memory://")
    assert isinstance(kv, MemoryKV)
    await kv.close()


async def test_sqlite_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite:///rel/x.db is relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    kv = await open_kv("sqlite:///rel/dir/x.db")
    try:
        assert isinstance(kv, SqliteKV)
        await kv.put("k", "v")
    finally:
        await kv.close()
    assert (tmp_path / "rel" / "dir" / "x.db").is_file()


async def test_sqlite_absolute_path(tmp_path: Path) -> None:
    """sqlite:////abs/x.db is an absolute path."""
    target = tmp_path / "abs" / "x.db"
    assert str(target).startswith("/")
    kv = await open_kv(f"sqlite:///{target}")
    await kv.close()
    assert target.is_file()


async def test_sqlite_unopenable_path(tmp_path: Path) -> None:
    """A path that cannot be created reports the backend as unavailable."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(KVUnavailableError):
        await open_kv(f"sqlite:///{blocker}/x.db")


@pytest.mark.parametrize("url", [redis_target.url(13), "rediss://127.0.0.1:6380/0"])
async def test_redis_urls_connect_lazily(url: str) -> None:
    """redis:// and rediss:// URLs open without connecting."""
    kv = await open_kv(url, namespace="other")
    assert isinstance(kv, RedisKV)
    await kv.close()


@pytest.mark.parametrize(
    "url", ["ftp://host/x", "sqlite://relative.db", "sqlite:///", "no-scheme", "postgres://x/y"]
)
async def test_bad_urls(url: str) -> None:
    """Unsupported or malformed URLs raise KVError."""
    with pytest.raises(KVError):
        await open_kv(url)


async def test_scheme_is_case_insensitive(tmp_path: Path) -> None:
    """URL schemes are case-insensitive, as RFC 3986 says."""
    kv = await open_kv(f"SQLite:///{tmp_path / 'x.db'}")
    await kv.close()
    kv = await open_kv("MEMORY://")
    await kv.close()


def test_redis_url_with_bad_port() -> None:
    """A malformed Redis URL is a KVError, not a stray ValueError."""
    with pytest.raises(KVError):
        RedisKV("redis://127.0.0.1:notaport/0")


def test_redis_client_is_imported_only_when_a_redis_kv_is_used() -> None:
    # redis-py costs several MB of resident memory; a worker on SQLite must not load it.
    probe = (
        "import sys, worker.server, kv; before = 'redis' in sys.modules; kv.RedisKV; "
        "print(before, 'redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
