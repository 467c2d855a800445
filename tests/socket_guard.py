"""Fail the test that leaves a network socket open, when it ends, instead of whichever test runs later.

A socket nobody closed is closed by garbage collection, with a `ResourceWarning` that `filterwarnings = error`
turns into a failure of the test that happens to be running at that moment (often in its setup), and only
when the collector reaches the socket before the object that would have closed it (an unclosed SDK client
closes its pool from `__del__`, in an order the collector does not promise): a flake, blamed on the wrong
test. This plugin notes every TCP socket created while a test runs (an audit hook on `socket.__new__`) and,
once the test and its fixtures are torn down, fails the test if one of them is still open, saying which;
then closes it, so it does not fail another test later.

Sockets a wider-scoped fixture owns (a module's worker, its connections) are not the test's: those created
while such a fixture is set up, or on a thread it started, are not checked.
"""

from __future__ import annotations

import socket
import sys
import threading
import weakref
from collections.abc import Generator
from typing import Any

import pytest

_INET = (socket.AF_INET, socket.AF_INET6)


class _Tracker:
    def __init__(self) -> None:
        self.test: list[weakref.ref[socket.socket]] | None = None  # while a test runs
        self.in_wide_fixture = False
        self.wide_threads: set[int] = set()
        self.lock = threading.Lock()

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "socket.__new__" or self.test is None:
            return
        sock, family = args[0], args[1]
        if family != -1 and family not in _INET:  # -1: taken from the file descriptor it wraps
            return
        if self.in_wide_fixture or threading.get_ident() in self.wide_threads:
            return
        with self.lock:
            if self.test is not None:
                self.test.append(weakref.ref(sock))

    def left_open(self) -> list[socket.socket]:
        with self.lock:
            refs, self.test = self.test or [], None
        return [
            s for s in (ref() for ref in refs) if s is not None and s.fileno() != -1 and s.family in _INET
        ]


_tracker = _Tracker()
sys.addaudithook(_tracker.audit)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any]) -> Generator[None, Any, Any]:
    if fixturedef.scope == "function":
        return (yield)
    # Told apart as threads, not by their idents: a thread that was running before and ended meanwhile may
    # have given its ident to one the fixture started.
    before = set(threading.enumerate())
    _tracker.in_wide_fixture = True
    try:
        return (yield)
    finally:
        _tracker.in_wide_fixture = False
        _tracker.wide_threads |= {
            t.ident for t in threading.enumerate() if t not in before and t.ident is not None
        }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    alive = {t.ident for t in threading.enumerate()}
    _tracker.wide_threads &= alive  # a thread id is reused once its thread ended
    with _tracker.lock:
        _tracker.test = []
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    result = yield
    leaked = _tracker.left_open()
    if leaked:
        described = "\n".join(f"  {s!r}" for s in leaked)
        for s in leaked:
            s.close()
        pytest.fail(
            f"the test left {len(leaked)} socket(s) open after its teardown:\n{described}", pytrace=False
        )
    return result
