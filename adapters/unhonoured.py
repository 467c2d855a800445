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

__all__ = ["check_chat", "check_responses"]

_NO_LOGPROBS = "log probabilities are not available for this model through this API"


def _refuse(message: str, param: str) -> NoReturn:
    raise TranslationError(message, param, unsupported=True)


def check_chat(body: dict[str, Any]) -> None:
    """Refuse the first chat field the translation would drop though the client relies on it."""
    if body.get("logprobs"):
        _refuse(f"`logprobs`: {_NO_LOGPROBS}.", "logprobs")
    if body.get("top_logprobs") not in (None, 0):
        _refuse(f"`top_logprobs`: {_NO_LOGPROBS}.", "top_logprobs")
    modalities = body.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        _refuse('`modalities`: this model answers in text only; ask for ["text"].', "modalities")
    if body.get("audio") is not None:
        _refuse("`audio`: this model answers in text only; audio output is not available.", "audio")
    if body.get("logit_bias"):
        _refuse("`logit_bias` is not available for this model.", "logit_bias")
    if body.get("functions"):
        _refuse("`functions` is not available for this model; declare them in `tools` instead.", "functions")
    if body.get("web_search_options") is not None:
        _refuse(
            "`web_search_options` is not available for this model through Chat Completions: it would answer "
            "without searching. Use an OpenAI search model, or for Claude the Messages API with its web "
            "search tool.",
            "web_search_options",
        )


def check_responses(body: dict[str, Any]) -> None:
    """Refuse the first Responses field the translation would drop though the client relies on it."""
    if body.get("top_logprobs") not in (None, 0):
        _refuse(f"`top_logprobs`: {_NO_LOGPROBS}.", "top_logprobs")
    include = body.get("include")
    if isinstance(include, list):
        for i, item in enumerate(include):
            if item == "message.output_text.logprobs":
                _refuse(f"`include`: {_NO_LOGPROBS}.", f"include[{i}]")
