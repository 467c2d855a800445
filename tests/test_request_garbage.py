"""A proxied request leaves nothing of the worker's own for the cycle collector: everything it made is freed by
reference counting the moment it is done with. A reference cycle per request (a closure that calls itself,
say) keeps its objects alive until the next collection and makes every collection walk them: CPU the
worker spends on every request at load (bench/proxy_cost.py)."""

from __future__ import annotations

import gc
import types
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import GatewaySetup

_OWN_PACKAGES = ("worker", "adapters", "kv")


def _own(obj: Any) -> str | None:
    """Where `obj` comes from, if it is a function, coroutine or frame of the worker's own code."""
    code: types.CodeType | None = None
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
    elif isinstance(obj, types.CoroutineType):
        code = obj.cr_code
    elif isinstance(obj, types.FrameType):
        code = obj.f_code
    if code is None:
        return None
    module = code.co_filename.replace("\\", "/")
    if any(f"/{package}/" in module for package in _OWN_PACKAGES) and "/tests/" not in module:
        return f"{module}:{code.co_qualname}"
    return None


def _of_dead_apps(garbage: list[Any]) -> set[int]:
    """The ids of what in `garbage` a dead application reaches: an earlier test's worker, whose last reference
    went while this test ran (its route table's closures are the worker's own code, but no request's)."""
    among = {id(obj) for obj in garbage}
    stack = [obj for obj in garbage if isinstance(obj, web.Application)]
    seen: set[int] = set()
    while stack:
        obj = stack.pop()
        if id(obj) not in seen:
            seen.add(id(obj))
            stack.extend(ref for ref in gc.get_referents(obj) if id(ref) in among)
    return seen


@pytest.fixture
def saved_garbage() -> Iterator[list[Any]]:
    """What the cycle collector finds from here on (kept, not freed, so the test can see it)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()


def test_a_proxied_request_leaves_no_reference_cycles_of_the_worker(
    gateway: GatewaySetup, saved_garbage: list[Any]
) -> None:
    openai_client = gateway.openai()
    anthropic_client = gateway.anthropic()
    for _ in range(3):
        chat = openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        assert chat.choices[0].message.content
        message = anthropic_client.messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hello"}]
        )
        assert message.content
    gc.collect()
    dead = _of_dead_apps(saved_garbage)
    left = sorted(
        {where for obj in saved_garbage if id(obj) not in dead and (where := _own(obj)) is not None}
    )
    assert left == []
