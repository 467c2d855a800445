"""HTTP to the upstreams: one pooled `aiohttp.ClientSession` per provider, with four timeouts.

- connect: establishing the TCP/TLS connection;
- first_byte: from sending the request to the response headers (a non-streaming completion arrives whole,
  so this bounds generation time too);
- idle: the longest gap between two reads of the body (a stalled stream);
- total: the whole exchange, body included.
aiohttp's read timeout covers both waits: it runs from the moment the request is sent, restarts on every
read, and stops at the end of the body. It is set to `first_byte` for the wait for the response, then to
`idle` once the headers are in, so a slow answer (a reasoning model thinking for minutes) is bounded by the
first-byte timeout alone, and a stalled body by the idle one.
The domain never touches sockets: it hands this module bytes and gets a response back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Upstream timeouts in seconds."""

    connect: float = 10.0
    first_byte: float = 300.0
    idle: float = 120.0
    total: float = 900.0


class UpstreamUnavailable(Exception):
    """The upstream could not be reached or did not answer in time. `kind` is `connect` or `timeout`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_SKIPPED = frozenset({istr("User-Agent")})
"""The auto headers an upstream request goes without: aiohttp's `User-Agent` names aiohttp and its version."""
_SKIPPED_MAP: CIMultiDictProxy[None] = CIMultiDictProxy(CIMultiDict({istr("User-Agent"): None}))


class _UpstreamRequest(aiohttp.ClientRequest):
    """aiohttp's request, with the session's `skip_auto_headers` applied without two multidicts per request.

    Given a `skip_auto_headers`, aiohttp builds a multidict of it (from a sorted generator), copies the
    request's headers into another and extends that with it, only to ask whether its two default headers
    (`Accept`, `Accept-Encoding`) are among them: about a sixth of what building the request costs. With
    ours, `User-Agent` alone, that is whether they are among the request's own headers; the headers come out
    the same, in the same order."""

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        if skip_auto_headers != _SKIPPED:
            super().update_auto_headers(skip_auto_headers)
            return
        self._skip_auto_headers = _SKIPPED_MAP  # type: ignore[assignment]  # read only, as aiohttp's is
        headers = self.headers
        for name, value in self.DEFAULT_HEADERS.items():
            if name not in headers:
                headers[name] = value


class UpstreamClient:
    """Owns the connection pools. Create it on the serving loop; `close()` at shutdown."""

    def __init__(self, timeouts: Timeouts, limit_per_host: int = 512) -> None:
        self.timeouts = timeouts
        self._limit = limit_per_host
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, name: str) -> aiohttp.ClientSession:
        """The pooled session for one upstream (created on first use)."""
        sess = self._sessions.get(name)
        if sess is None or sess.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=self._limit, keepalive_timeout=60)
            sess = aiohttp.ClientSession(
                connector=connector,
                # aiohttp enforces total (body included, until release), connect, and the read timeout:
                # first byte here, idle once the headers are in (see `request`).
                timeout=aiohttp.ClientTimeout(
                    total=self.timeouts.total,
                    sock_connect=self.timeouts.connect,
                    sock_read=self.timeouts.first_byte,
                ),
                auto_decompress=True,
                skip_auto_headers=_SKIPPED,
                request_class=_UpstreamRequest,
                # The pool serves every tenant: a cookie one answer set (a CDN's bot-management cookie, a
                # provider's session) must not be sent with anyone's later requests.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._sessions[name] = sess
        return sess

    async def request(
        self, name: str, method: str, url: str | URL, body: bytes | None, headers: Mapping[str, str]
    ) -> aiohttp.ClientResponse:
        """Send a request; return when the response headers arrived. The caller reads and releases it. A `URL`
        is sent as it is (one built with `encoded=True` is not requoted)."""
        sess = self.session(name)
        try:
            # Never follow a redirect: aiohttp would resend the provider key (`x-api-key` included) to the new
            # host, and turn a POST into a GET; the caller reports a redirect as a bad upstream answer.
            resp = await sess.request(method, url, data=body, headers=headers, allow_redirects=False)
        except TimeoutError as exc:
            raise UpstreamUnavailable("timeout", self._timed_out(name, exc)) from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnavailable("connect", f"cannot connect to {name}: {exc.os_error or exc}") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise UpstreamUnavailable("connect", f"{name} closed the connection: {exc}") from exc
        protocol = resp.connection.protocol if resp.connection is not None else None
        if protocol is not None:
            protocol.read_timeout = self.timeouts.idle  # from the next read on
            if not resp.content.is_eof():
                # Restart the running timer at the idle setting now. Only while the body is still coming:
                # its end stops the timer, and one started after it would outlive the response.
                protocol.start_timeout()
        return resp

    def _timed_out(self, name: str, exc: TimeoutError) -> str:
        """Which of the timeouts fired, in words."""
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return f"could not connect to {name} within {self.timeouts.connect:g}s"
        if isinstance(exc, aiohttp.SocketTimeoutError):  # the read timeout, at its first-byte setting
            return f"{name} did not respond within {self.timeouts.first_byte:g}s"
        return f"{name} did not answer within the total timeout of {self.timeouts.total:g}s"

    async def close(self) -> None:
        """Close every pool."""
        for sess in self._sessions.values():
            await sess.close()
        self._sessions.clear()
