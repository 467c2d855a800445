"""BM25: tokenizer rules and Okapi scoring (k1=1.2, b=0.75) checked against the formula by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.optimize import bm25
from worker.optimize.bm25 import BM25, STOPWORDS, tokenize


def test_tokenize_lowercases_and_drops_stopwords_and_single_letters() -> None:
    assert tokenize("The Quick brown FOX jumps over a lazy dog") == [
        "quick",
        "brown",
        "fox",
        "jumps",
        "lazy",
        "dog",
    ]
    assert tokenize("") == []
    assert tokenize("it is what it is") == []
    assert all(t not in STOPWORDS for t in tokenize("this is the one that we should use for x and y"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("getUserById", ["user", "id", "getuserbyid"]),  # "get" and "by" are stopwords; the whole id stays
        ("HTTPServerError", ["http", "server", "error", "httpservererror"]),
        ("max_retry_count", ["max", "retry", "count", "max_retry_count"]),
        ("rate-limiter", ["rate", "limiter", "rate-limiter"]),
        ("redis.call", ["redis", "call", "redis.call"]),
        ("src/app/main.py", ["src", "app", "main", "py", "src/app/main.py"]),
        ("parseJSON2xml", ["parse", "json", "2", "xml", "parsejson2xml"]),
    ],
)
def test_tokenize_splits_identifiers(text: str, expected: list[str]) -> None:
    assert tokenize(text) == expected


def test_tokenize_keeps_digits_and_versions() -> None:
    assert tokenize("retry 3 times on port 8080") == ["retry", "3", "times", "port", "8080"]
    assert tokenize("upgrade to v1.2.3") == ["upgrade", "1", "2", "3", "v1.2.3"]
    assert tokenize("ORD-1042 refunded") == ["ord", "1042", "ord-1042", "refunded"]


def test_tokenize_handles_unicode_words() -> None:
    assert tokenize("Café naïve Straße") == ["café", "naïve", "straße"]


def _okapi(query: list[str], docs: list[list[str]], k1: float = 1.2, b: float = 0.75) -> list[float]:
    """The textbook formula, written out independently of the implementation."""
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    out = []
    for doc in docs:
        total = 0.0
        for term in dict.fromkeys(query):
            df = sum(1 for d in docs if term in d)
            if not df:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            tf = doc.count(term)
            total += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        out.append(total)
    return out


def test_scores_match_the_okapi_formula() -> None:
    docs = [
        tokenize("The refund for order ORD-1042 was issued on March 3."),
        tokenize("Refunds usually take five to seven business days to arrive."),
        tokenize("The shoes will ship with the original order."),
        tokenize("Please confirm the refund amount and the refund reference."),
        tokenize(""),
    ]
    query = tokenize("when will my refund arrive")
    got = BM25(docs).scores(query)
    assert got == pytest.approx(_okapi(query, docs))
    assert got[4] == 0.0
    assert got[2] == 0.0


def test_ranking_prefers_matches_rare_terms_and_short_documents() -> None:
    docs = [
        tokenize("cache invalidation in the gateway"),
        tokenize("the gateway forwards requests to the upstream provider"),
        tokenize("gateway gateway gateway timeout"),
        tokenize(
            "cache invalidation in the gateway after a very long and winding explanation of many things"
        ),
    ]
    bm25 = BM25(docs)
    scores = bm25.scores(tokenize("cache invalidation"))
    assert scores[0] > scores[3] > 0.0  # same terms, shorter document wins
    assert scores[1] == scores[2] == 0.0
    # A rare term outweighs a common one.
    assert bm25.idf("timeout") > bm25.idf("gateway")
    assert bm25.rank(tokenize("gateway timeout"))[0] == 2


def test_repeated_query_terms_count_once_and_unknown_terms_score_zero() -> None:
    docs = [tokenize("alpha beta"), tokenize("beta gamma")]
    bm25 = BM25(docs)
    assert bm25.scores(["alpha", "alpha", "alpha"]) == bm25.scores(["alpha"])
    assert bm25.scores(["nothing", "here"]) == [0.0, 0.0]
    assert bm25.scores([]) == [0.0, 0.0]


def test_a_documents_score_does_not_depend_on_where_it_stands() -> None:
    """search ranks its matches as it reads them, in line order, not grouped by file: the same floats."""
    import random

    rng = random.Random(11)
    words = ["refund", "cap", "ord", "77812", "ledger", "post", "amount", "step", "1", "12", "test"]
    for _ in range(300):
        docs = [[rng.choice(words) for _ in range(rng.randint(0, 9))] for _ in range(rng.randint(1, 40))]
        query = [rng.choice(words) for _ in range(rng.randint(0, 6))]
        order = list(range(len(docs)))
        rng.shuffle(order)
        scores = BM25(docs).scores(query)
        shuffled = BM25([docs[k] for k in order]).scores(query)
        assert [scores[k] for k in order] == shuffled


def test_empty_corpus_and_empty_documents() -> None:
    assert BM25([]).scores(["x"]) == []
    assert BM25([[], []]).scores(["x"]) == [0.0, 0.0]


def test_rank_is_deterministic_with_ties_in_document_order() -> None:
    docs = [tokenize("same words here"), tokenize("other text"), tokenize("same words here")]
    bm25 = BM25(docs)
    assert bm25.rank(tokenize("same words")) == [0, 2, 1]
    assert BM25(docs).scores(tokenize("same words")) == bm25.scores(tokenize("same words"))


def test_tokenize_gives_the_same_terms_from_its_chunk_cache_and_keeps_the_cache_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.optimize import bm25

    text = "Retry getUserById on HTTPServerError 503: the the cache_size v1.2.3 Äpfel x"
    monkeypatch.setattr(bm25, "_TERMS", {})
    cold = tokenize(text)
    assert cold == tokenize(text) == tokenize(text)  # warm: every chunk now comes from the cache
    assert cold == [
        "retry", "user", "id", "getuserbyid", "http", "server", "error", "httpservererror", "503",
        "cache", "size", "cache_size", "1", "2", "3", "v1.2.3", "äpfel",
    ]  # fmt: skip
    monkeypatch.setattr(bm25, "_TERMS_MAX", 3)
    bm25._TERMS.clear()
    assert tokenize(text) == cold
    assert len(bm25._TERMS) <= 3


def test_tokenizing_long_unique_tokens_retains_no_memory() -> None:
    """Hex strings, base64 blobs and JWTs in a conversation are one chunk each, rarely seen twice: the
    tokenizer's shared cache must not keep them (it held ~25x their size each, growing the worker by MBs
    per request until it ran out of memory)."""
    import secrets
    import tracemalloc

    tokens = [secrets.token_urlsafe(7_500) for _ in range(100)]  # ~10 KB each, like a base64url blob
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for token in tokens:
            assert tokenize(f"the blob {token} again")
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 1_000_000, f"{retained} bytes kept after tokenizing {len(tokens)} long tokens"


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["a", "Zz", "09", "_", ".", "-", "/", ":", "@", "..", " ", "\n", "#", "(", "x_y", "a-1"]
        )
        | st.text(alphabet=st.characters(max_codepoint=127), max_size=4),
        max_size=30,
    )
)
def test_ascii_text_is_cut_into_the_chunks_the_unicode_pattern_finds(parts: list[str]) -> None:
    """`tokenize` cuts ASCII text into pieces with a byte table (faster): stripped of separators, they are the
    chunks `[^\\W_]` finds, and the pieces of separators only are the ones that strip to nothing."""
    text = "".join(parts)
    chunks = [piece.strip(bm25._SEPARATORS) for piece in bm25._ascii_pieces(text)]
    assert [chunk for chunk in chunks if chunk] == bm25._CHUNK_RE.findall(text), text


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a", "Zz", "09", "_", ".", "-", ":", "é", "x1", "getX", "\t", "\n"]), max_size=12
    ),
    st.lists(
        st.sampled_from(["a", "Zz", "09", "_", ".", "-", ":", "é", " ", "getX", "HTTPServer"]), max_size=12
    ),
)
def test_text_cut_at_a_blank_has_the_terms_of_its_two_parts(head: list[str], tail: list[str]) -> None:
    """No term holds a blank: search tokenizes a grep body in two at its first blank (`search.compress`)."""
    a, b = "".join(head), " " + "".join(tail)
    assert tokenize(a + b) == tokenize(a) + tokenize(b)
