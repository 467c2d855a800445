"""Header names the request path reads and writes, as `multidict.istr` made once.

aiohttp keeps headers in case-insensitive multidicts, which fold a plain `str` name to lower case on every
lookup, and again for every name put into one (a response's headers, an upstream request's). An `istr`
carries its folded form: a lookup or insert with one skips the fold, about three times cheaper. An `istr`
equals and hashes as the `str` it was made from, so a dict keyed by these is the same as one keyed by the
plain names, and it is written out as given (its case kept). (Typed `str`: what they stand in for.)"""

from __future__ import annotations

from multidict import istr

ACCEPT: str = istr("Accept")
ANTHROPIC_VERSION: str = istr("anthropic-version")
AUTHORIZATION: str = istr("Authorization")
CONTENT_TYPE: str = istr("Content-Type")
REQUEST_ID: str = istr("request-id")
X_API_KEY: str = istr("x-api-key")
X_FORWARDED_FOR: str = istr("X-Forwarded-For")
X_REQUEST_ID: str = istr("X-Request-Id")
X_SESSION_ID: str = istr("X-Session-Id")
X_UPSTREAM_API_KEY: str = istr("X-Upstream-Api-Key")

X_RATELIMIT_LIMIT: str = istr("X-RateLimit-Limit")
X_RATELIMIT_REMAINING: str = istr("X-RateLimit-Remaining")
X_RATELIMIT_RESET: str = istr("X-RateLimit-Reset")

X_TREX_COMPRESSION_MODEL: str = istr("X-Trex-Compression-Model")
X_TREX_FALLBACK_ATTEMPTS: str = istr("X-Trex-Fallback-Attempts")
X_TREX_GUARANTEE_STATUS: str = istr("X-Trex-Guarantee-Status")
X_TREX_ID: str = istr("X-Trex-Id")
X_TREX_OPTIMIZE: str = istr("X-Trex-Optimize")
X_TREX_OPTIMIZED_TOKENS: str = istr("X-Trex-Optimized-Tokens")
X_TREX_ORIGINAL_TOKENS: str = istr("X-Trex-Original-Tokens")
X_TREX_PROXY_OVERHEAD_MS: str = istr("X-Trex-Proxy-Overhead-Ms")
X_TREX_SAVED_TOKENS: str = istr("X-Trex-Saved-Tokens")
X_TREX_SAVINGS_PERCENT: str = istr("X-Trex-Savings-Percent")
X_TREX_SESSION_ID: str = istr("X-Trex-Session-Id")
X_TREX_SESSION_REOPTIMIZED: str = istr("X-Trex-Session-Reoptimized")
X_TREX_SESSION_REPLAYED: str = istr("X-Trex-Session-Replayed")
X_TREX_TOKEN_COUNT: str = istr("X-Trex-Token-Count")
X_TREX_UPSTREAM_MODEL: str = istr("X-Trex-Upstream-Model")
X_TREX_UPSTREAM_PROVIDER: str = istr("X-Trex-Upstream-Provider")
X_TREX_USAGE_EVENT_ID: str = istr("X-Trex-Usage-Event-Id")
