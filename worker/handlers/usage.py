"""Usage reads for the calling key: one event by id, totals over a time range, and its request log."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, date, datetime

from aiohttp import web

from kv import MAX_EXPIRATION, InvalidListArgumentError

from ..accounting.events import GROUP_BYS, UsageRecorder
from ..appkeys import GATEWAY
from ..errors import GatewayError, InvalidRequestError, NotFoundError
from ..jsonio import json_response
from ..proxy import authenticate

_MAX_RANGE_SECONDS = 366 * 86400


def _recorder(request: web.Request) -> UsageRecorder:
    usage = request.app[GATEWAY].usage
    if usage is None:
        raise GatewayError(
            'Usage accounting is off on this worker (USAGE_ACCOUNTING = "off").',
            status=404,
            code="usage_accounting_off",
        )
    return usage


async def usage_event(request: web.Request) -> web.StreamResponse:
    """`GET /v1/usage/events/{id}`: the event, `pending` until reconciled, then `final`."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    event_id = request.match_info["id"]
    event = await _recorder(request).get(key.id, event_id)
    if event is None:
        raise NotFoundError(f"No usage event {event_id!r} for this key.", code="usage_event_not_found")
    return json_response(event)


def parse_bound(value: str, name: str, end: bool) -> int:
    """Epoch seconds from `YYYY-MM-DD` (the whole day: its start, or its end for `to`), an ISO-8601
    date-time (UTC unless it has an offset) or epoch seconds."""
    text = value.strip()
    try:
        if text.isascii() and text.isdigit():
            if int(text) > MAX_EXPIRATION:  # 9999-12-31: a later bound cannot be turned into a date
                raise ValueError(text)
            return int(text)
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = calendar.timegm(day.timetuple())
            epoch = start + 86399 if end else start
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            epoch = int(moment.timestamp())
        if epoch > MAX_EXPIRATION:  # the same bound as in epoch seconds (an offset can pass 9999-12-31)
            raise ValueError(text)
        return max(epoch, 0)  # nothing was recorded before 1970: an earlier bound means "from the start"
    except ValueError:
        raise InvalidRequestError(
            f"'{name}' must be a date (YYYY-MM-DD), an ISO-8601 date-time or epoch seconds, got {value!r}.",
            param=name,
        ) from None


def resolve_range(raw_from: str | None, raw_to: str | None, now: float) -> tuple[int, int]:
    """[from, to] in epoch seconds; defaults: the start of the current month (UTC) to now."""
    end = parse_bound(raw_to, "to", True) if raw_to else int(now)
    if raw_from:
        start = parse_bound(raw_from, "from", False)
    else:
        t = time.gmtime(now)
        start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
    if start > end:
        raise InvalidRequestError("'from' must not be after 'to'.", param="from")
    if end - start > _MAX_RANGE_SECONDS:
        raise InvalidRequestError("The range from 'from' to 'to' may span at most 366 days.", param="from")
    return start, end


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


async def usage_totals(request: web.Request) -> web.StreamResponse:
    """`GET /v1/usage?from=&to=&group_by=model|day|provider`: totals for the calling key."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    recorder = _recorder(request)
    group_by = request.query.get("group_by") or None
    if group_by is not None and group_by not in GROUP_BYS:
        raise InvalidRequestError(f"'group_by' must be one of {', '.join(GROUP_BYS)}.", param="group_by")
    start, end = resolve_range(request.query.get("from"), request.query.get("to"), time.time())
    result = await recorder.totals(key.id, start, end, group_by)
    return json_response(
        {
            "object": "usage.summary",
            "key_id": key.id,
            "from": _iso(start),
            "to": _iso(end),
            "group_by": group_by,
            "currency": "USD",
            **result,
        }
    )


async def request_logs(request: web.Request) -> web.StreamResponse:
    """`GET /v1/logs?limit=&cursor=`: the calling key's request-log entries, newest first."""
    gw = request.app[GATEWAY]
    key = await authenticate(request, gw)
    raw_limit = request.query.get("limit", "100")
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= 1000:
        raise InvalidRequestError("'limit' must be an integer from 1 to 1000.", param="limit")
    cursor = request.query.get("cursor") or None
    try:
        entries, next_cursor = await gw.recorder.logs(key.id, int(raw_limit), cursor)
    except InvalidListArgumentError as exc:  # not an outage (a 503 at the edge): only the cursor's fault
        raise InvalidRequestError(f"'cursor' is not valid: {exc}", param="cursor") from None
    return json_response(
        {"object": "list", "data": entries, "has_more": next_cursor is not None, "next_cursor": next_cursor}
    )
