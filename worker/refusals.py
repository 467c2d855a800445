"""What a client is told when aiohttp cannot parse its request, or its head does not arrive in time: a JSON
error in the format of the route it was calling, in place of aiohttp's plain-text "400 Bad Request" (see
`worker.connection`, which sends it).

The route is read from the first bytes of the request head, since aiohttp keeps nothing of a head it refused;
aiohttp's description of the problem is passed on without the request bytes it quotes (they may hold a key).
"""

from __future__ import annotations

import re

from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong

from .errors import (
    ErrorFormat,
    GatewayError,
    InvalidRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    error_format_for,
)
from .logs import scrub

# The request line as far as it is needed: `METHOD /path` or `METHOD http://host/path` (leading blank lines
# are allowed before it).
_REQUEST_LINE = re.compile(rb"\s*[!-~]+ +(?:[A-Za-z][A-Za-z0-9+.-]*://[^/\s]*)?(/[^\s?#]*)")
# Where aiohttp starts quoting the request's bytes in its messages: `…: b'…'`, `bytearray(b'…')`, `: '…'`.
_QUOTED = re.compile(r""":\s*(?:b?['"]|bytearray\()|\s(?:b['"]|bytearray\()""")
_MAX_DESCRIPTION = 200
_DEFAULT_LIMIT = 8190  # aiohttp's max_line_size and max_field_size
_HEADERS_TOO_LARGE = "request_headers_too_large"
_MALFORMED = "malformed_request"
# aiohttp names a coding it cannot decode by its library and its token: `brotli (br)`, `zstandard (zstd)`.
_CODING = re.compile(r"\((\w+)\)")


class HeadTimeout(HttpProcessingError):
    """A request head that did not arrive in time, refused like one aiohttp could not parse."""

    code = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(message=f"The request head was not received within {seconds:g} seconds.")


def head_format(head: bytes) -> ErrorFormat:
    """The error format of the route a (partial or broken) request head names; OpenAI when unknown."""
    match = _REQUEST_LINE.match(head)
    if match is None:
        return "openai"
    return error_format_for(match.group(1).decode("latin-1"))


def describe(exc: HttpProcessingError) -> str:
    """aiohttp's description of what is wrong, without the bytes of the request it quotes ("" if none)."""
    if exc.message.startswith("Pause on PRI/Upgrade"):  # llhttp's stop at an HTTP/2 connection preface
        return "HTTP/2 without TLS is not supported; send HTTP/1.1"
    parts: list[str] = []
    for line in exc.message.splitlines():
        text = _QUOTED.split(line, maxsplit=1)[0].strip().rstrip(":").strip()
        if not text:
            if parts:
                break  # what follows the description is the quoted request bytes and a caret under them
            continue
        parts.append(text)
    return scrub(": ".join(parts))[:_MAX_DESCRIPTION].rstrip(".")


def refusal(exc: HttpProcessingError, head: bytes = b"", *, in_body: bool = False) -> GatewayError:
    """The error a request aiohttp could not parse is answered with: `head` is what arrived of its head, or
    `in_body` says the head was fine and the error is in the (chunked) body after it."""
    if isinstance(exc, HeadTimeout):
        return RequestTimeoutError(exc.message)
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else _DEFAULT_LIMIT
        if in_body:  # a chunk-size line or a trailer
            return InvalidRequestError(
                f"A line of the chunked body is longer than {limit} bytes.", code=_MALFORMED
            )
        line_end = head.lstrip().find(b"\n")
        if 0 <= line_end <= limit + 1:  # the request line ended within the limit: a header line is too long
            return InvalidRequestError(
                f"A request header is longer than {limit} bytes.", code=_HEADERS_TOO_LARGE, status=431
            )
        return InvalidRequestError(
            f"The request line is longer than {limit} bytes.", code="uri_too_long", status=414
        )
    if isinstance(exc, ContentEncodingError) and not in_body:
        # Found in the head: a coding this worker has no decoder for (a body that is not what its coding
        # says is found while it is read: see `jsonio.read_body`).
        named = _CODING.search(exc.message)
        coding = f"Content-Encoding {named.group(1)}" if named else "The request's Content-Encoding"
        return InvalidRequestError(
            f"{coding} is not supported: send the body uncompressed, or gzip or deflate encoded.",
            code="unsupported_content_encoding",
            status=415,
        )
    description = describe(exc)
    if description.endswith("overflow"):  # a Content-Length or chunk size no body limit could allow
        return PayloadTooLargeError(f"Request body is too large: {description}.")
    message = f"Malformed HTTP request: {description}." if description else "Malformed HTTP request."
    if description.startswith("Too many headers"):
        return InvalidRequestError(message, code=_HEADERS_TOO_LARGE, status=431)
    return InvalidRequestError(message, code=_MALFORMED)
