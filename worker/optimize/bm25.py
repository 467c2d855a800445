"""A small, fast Okapi BM25 over short documents (sentences, search hits, lines).

`tokenize` turns text into lowercase terms: words, identifiers split into their parts (camelCase,
snake_case, kebab-case, dotted and slashed names — the whole identifier is kept as one more term so an
exact identifier match outranks a partial one), and digit runs as terms of their own. A short English
stopword list and single letters are dropped.

`BM25(docs).scores(query_tokens)` gives one score per document (k1=1.2, b=0.75, the non-negative
Lucene-style IDF). Everything is deterministic: postings are built in document order and the scores are
summed in the order the query terms first appear, so the same input always gives the same floats.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

K1 = 1.2
B = 0.75

# A run of letters/digits, optionally joined to more runs by identifier punctuation (a.b, a_b, a-b, a/b).
_CHUNK_RE = re.compile(r"[^\W_]+(?:[._\-/:@]+[^\W_]+)*")
_SEPARATORS = "._-/:@"
_SEP_RE = re.compile(r"[._\-/:@]+")
# On ASCII text, where `[^\W_]` is `[A-Za-z0-9]`, chunks are cut without the pattern: every character that is
# neither a letter, a digit nor a separator written as a blank, the text splits into pieces of letters, digits
# and separators only, and within such a piece a run of separators is followed by a letter or a digit unless
# it ends the piece. So a piece without its leading and trailing separators is one chunk (or nothing, when it
# is separators only). A byte table applied in C, about 2x faster than the pattern on a grep line.
_ASCII_PIECE_BYTES = bytes(
    c if chr(c).isascii() and (chr(c).isalnum() or chr(c) in _SEPARATORS) else ord(" ") for c in range(256)
)
# Parts of an ASCII identifier: "HTTPServer" → HTTP, Server; "getUser2FA" → get, User, 2, FA.
_CAMEL_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")

_STOPWORDS_TEXT = """
    a about above after again against all also am an and any are as at be because been before being below
    between both but by can could d did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just ll m me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own re s same she
    should so some such t than that the their theirs them themselves then there these they this those
    through to too under until up ve very was we were what when where which while who whom why will with
    would you your yours yourself yourselves don doesn didn isn wasn aren weren won wouldn shouldn couldn
    hasn haven hadn let lets get got may might must shall
"""
STOPWORDS: frozenset[str] = frozenset(_STOPWORDS_TEXT.split())


def _parts(chunk: str) -> list[str]:
    pieces = [p for p in _SEP_RE.split(chunk) if p]
    out: list[str] = []
    for piece in pieces:
        if piece.isascii():
            out.extend(_CAMEL_RE.findall(piece) or [piece])
        else:
            out.append(piece)
    return out


# Terms by chunk, shared by every call: words recur (within a text and across requests), and a chunk's terms
# depend on the chunk alone. Bounded in entries (emptied when full) and in their size: only chunks of words'
# length are kept. A long chunk (a hex string, a base64 blob, a JWT) is rarely seen twice, and its terms
# repeat it lowercased and in pieces, so caching each one held many times its size: a few MB per request
# of such traffic, up to gigabytes before the entry bound was reached.
_TERMS: dict[str, tuple[str, ...]] = {}
_TERMS_MAX = 20_000
_CACHED_CHUNK_MAX = 32


def _chunk_terms(chunk: str) -> tuple[str, ...]:
    if chunk.isascii() and (
        chunk.isdigit() or (chunk.isalpha() and (len(chunk) == 1 or chunk[1:].islower()))
    ):
        # A plain word or number (most chunks): one part, the chunk itself.
        term = chunk.lower()
        return (term,) if term not in STOPWORDS and (len(term) > 1 or term.isdigit()) else ()
    parts = _parts(chunk)
    terms = [
        term
        for term in (part.lower() for part in parts)
        if term not in STOPWORDS and (len(term) > 1 or term.isdigit())
    ]
    if len(parts) > 1:
        whole = chunk.lower()
        if whole not in STOPWORDS:
            terms.append(whole)
    return tuple(terms)


def _ascii_pieces(text: str) -> list[str]:
    """The pieces of an ASCII `text` that hold its chunks, one each (see `_ASCII_PIECE_BYTES`): a chunk is its
    piece stripped of separators, and a piece of separators only holds none."""
    return text.encode().translate(_ASCII_PIECE_BYTES).decode().split()


def tokenize(text: str) -> list[str]:
    """Lowercase terms of `text`, in order (see the module docstring)."""
    terms: list[str] = []
    cache = _TERMS  # by piece: a chunk, or an ASCII piece holding one (`_ascii_pieces`) or none
    for piece in _ascii_pieces(text) if text.isascii() else _CHUNK_RE.findall(text):
        found = cache.get(piece)
        if found is None:
            chunk = piece.strip(_SEPARATORS)
            found = _chunk_terms(chunk) if chunk else ()
            if len(piece) <= _CACHED_CHUNK_MAX:
                if len(cache) >= _TERMS_MAX:
                    cache.clear()
                cache[piece] = found
        terms += found
    return terms


class BM25:
    """Okapi BM25 over a fixed list of tokenized documents."""

    __slots__ = ("_docs", "_norm", "_postings", "avgdl", "k1", "n")

    def __init__(self, docs: Sequence[Sequence[str]], k1: float = K1, b: float = B) -> None:
        self.k1 = k1
        self.n = len(docs)
        lengths = list(map(len, docs))
        total = sum(lengths)
        self.avgdl = total / self.n if self.n and total else 1.0
        self._docs = docs
        self._postings: dict[str, list[tuple[int, int]]] = {}
        """(document, term frequency) by term, for the terms asked about so far: a query names a few
        terms, and indexing every term of every document would cost more than the scoring."""
        # Documents of a corpus come in a few lengths: each length's normaliser is worked out once (the same
        # float wherever it is worked out) and looked up for each document in C.
        norm_of = {length: k1 * (1.0 - b + b * length / self.avgdl) for length in set(lengths)}
        self._norm = list(map(norm_of.__getitem__, lengths))

    def _index(self, terms: Iterable[str]) -> None:
        """Postings of the `terms` not indexed yet, in document order.

        A document holding a wanted term is read wherever it occurs, a repeated one (a sentence recurring
        through a text) too: its one or two such terms are counted in C, which costs less than looking the
        document up among those read before (search ranks hundreds of distinct documents, most holding one).
        """
        wanted = {t for t in terms if t not in self._postings}
        if not wanted:
            return
        postings = self._postings
        for term in wanted:
            postings[term] = []
        disjoint, common = wanted.isdisjoint, wanted.intersection
        for i, doc in enumerate(self._docs):
            if disjoint(doc):  # most documents hold no query term: ruled out in C, no list built
                continue
            for term in common(doc):
                postings[term].append((i, doc.count(term)))

    def idf(self, term: str) -> float:
        """Inverse document frequency of `term` (never negative)."""
        self._index((term,))
        df = len(self._postings[term])
        return math.log(1.0 + (self.n - df + 0.5) / (df + 0.5))

    def scores(self, query_tokens: Iterable[str]) -> list[float]:
        """One score per document, in document order (0.0 where no query term occurs).

        A document's score is worked out from its own terms and the corpus's statistics alone (its length,
        the average length, each query term's document frequency): the same float wherever the document
        stands among the others.
        """
        out = [0.0] * self.n
        k1p = self.k1 + 1.0
        terms = dict.fromkeys(query_tokens)
        self._index(terms)
        for term in terms:
            posting = self._postings.get(term)
            if not posting:
                continue
            idf = self.idf(term)
            norm = self._norm
            for i, freq in posting:
                out[i] += idf * freq * k1p / (freq + norm[i])
        return out

    def rank(self, query_tokens: Iterable[str]) -> list[int]:
        """Document indices, best score first (ties: earlier document first)."""
        scored = self.scores(query_tokens)
        return sorted(range(self.n), key=lambda i: (-scored[i], i))
