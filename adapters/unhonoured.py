"""Request fields that change the answer but cannot be carried by a translation: refused, never dropped.

A request translated for another provider (chat for Claude; Responses for Claude, OpenRouter or a local
server) goes through the canonical `Request`, which has no room for these. Dropping one would let the SDK
hand the user `None` where their code expects data, or an answer to a different question, while the call
looks successful; so each is a `TranslationError` naming the client's field. Same-format requests never
come here: they are forwarded as sent, and the provider answers them.

Fields that only tune how an answer is produced or billed (`seed`, `service_tier`, `store`, `metadata`,
`prediction`, `prompt_cache_key`, `safety_identifier`, `user`, `verbosity`, and chat's `frequency_penalty`
and `presence_penalty`, which have no Claude equivalent) are left out without a word.
"""

from __future__ import annotations

from typing import Any, NoReturn

from .base import TranslationError

__all__ = ["check_chat"]


def _refuse(message: str, param: str) -> NoReturn:
    raise TranslationError(message, param, unsupported=True)


def check_chat(body: dict[str, Any]) -> None:
    """Refuse the first chat field the translation would drop though the client relies on it."""
    if body.get("web_search_options") is not None:
        _refuse(
            "`web_search_options` is not available for this model through Chat Completions: it would answer "
            "without searching. Use an OpenAI search model, or for Claude the Messages API with its web "
            "search tool.",
            "web_search_options",
        )
