"""What a person asked for: imperative sentences and requests in text the user typed.

The narrative compressor keeps every constraint clause (`facts.is_constraint`: must, never, only …) of any
prose. A user's instructions also bind when they carry none of those words: "Put the handler next to the
capture handler", "Reuse the idempotency decorator", "I'd like the errors in lowercase". In text a person
typed (`narrative.compress_many(..., typed=...)`), such sentences are kept like constraints. The model's own
imperatives ("Run the tests to confirm") address the user, so they are not singled out.

Both patterns are matched on one sentence, lower-cased: the imperative one anchored at its start (after up
to three linking words, "Also, then …"), so each costs a bounded look at the sentence's first words.
"""

from __future__ import annotations

import re

# Verbs a request starts with, in the base form. A noun that happens to start a sentence ("Test coverage is
# low.") is also matched: that only keeps a sentence.
_VERBS = """
    accept add allow append apply ask assert avoid be block build bump cache call catch change check clean
    close combine commit compare configure convert copy cover create decode default delete deny deploy
    describe do document downgrade draft drop emit encode ensure escape exclude explain expose extract fetch
    filter find fix follow format generate get give group guard handle hide implement import include inline
    install investigate keep leave limit lint list load log look make mark match merge migrate mock move
    name note notify open parse pass pin prefer prepend print publish push put raise read rebuild reduce
    refactor register reject remember remove rename replace reply require rerun reset respond restart retry
    return reuse revert review rewrite roll round run save schedule send serialize set ship show simplify skip
    sort split start stick stop store strip stub summarise summarize switch tell test throw translate treat
    trim truncate try turn undo update upgrade use validate verify wrap write
"""
_LINKS = "also|and|then|now|so|but|first|second|third|next|finally|lastly|additionally|ok|okay|please"
_LEAD = rf"(?:(?:{_LINKS})\b[,:]?[ \t]+){{0,3}}"
_IMPERATIVE_RE = re.compile(rf"[\s\"'*_(\[>-]*{_LEAD}(?:{'|'.join(sorted(set(_VERBS.split())))})\b(?![-'])")
_REQUEST_RE = re.compile(
    r"\b(?:please|pls|i(?:'d| would) (?:like|prefer|rather)|i want|i need|we need|we want|let's|"
    r"you (?:should|need to|have to|must)|can you|could you|would you|will you|make sure|be sure)\b"
)


def is_directive(sentence: str) -> bool:
    """True for a sentence that asks for something: it starts with a verb in the imperative, or it is a
    request ("please", "I'd like", "could you", "make sure" …)."""
    low = sentence.lower()
    return _IMPERATIVE_RE.match(low) is not None or _REQUEST_RE.search(low) is not None
