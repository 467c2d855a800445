"""The TrexID memory layer: optimized context stored as a TokenZip payload, referenced and expanded later.

Storing (`POST /v1/compress` or a proxied request with `trex: {"store_context": true}`)
keeps, for the calling key: `summary` = the optimized text, `facts` = the exactly preserved facts (ids,
amounts, dates, codes … found by the optimizer's fact scanner) verbatim, `original` = the text before
optimization (for full expansion), and the original cut into chunks with one vector each.

Vectors are lexical by default and need no model: each chunk's terms are feature-hashed into 384
dimensions (a signed hash, so collisions cancel rather than pile up), weighted by TF-IDF over the payload's
chunks, L2-normalised, and quantized with the seed's `uniform` method (one byte per dimension over [-1, 1]).
The same hashing turns a query into a vector; chunks are ranked by cosine similarity. With
`MEMORY_EMBEDDINGS_URL` set (any OpenAI-compatible `/embeddings`, e.g. a local server;
`MEMORY_EMBEDDINGS_MODEL`, `MEMORY_EMBEDDINGS_API_KEY`), that endpoint's vectors are stored instead
(quantized `uniform` over their own range) and queries on those payloads are embedded by it too; if it
fails, the lexical vectors are used and a warning logged.

A later request names a payload with a `{"type": "trex_ref", "trex_id": "…"}` content part in any message
(also among a Messages tool_result's blocks, in a Messages `system` list or a Responses tool output's parts),
or `trex: {"context_ref": ["…"]}`; the worker replaces it with the expansion before optimizing and routing:
the summary and facts by default, the original with `"expand": "full"`, the k best chunks with
`"expand": {"query": "…", "k": 5}`. A key may use the payloads it stored and those whose
`allowed_receivers` name it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from adapters.transport import UpstreamClient, UpstreamUnavailable

from .errors import InvalidRequestError, PayloadTooLargeError
from .optimize.facts import distinct_facts, find_facts
from .optimize.segments import Format, extract
from .payloads import (
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    Metadata,
    Payload,
    PayloadStore,
    PushRequest,
    QuantParams,
    Stored,
)

log = logging.getLogger("trex.memory")

DIMENSIONS = 384
QUANT = QuantParams(min=-1, max=1, method="uniform")
LEXICAL = "lexical-hash-384"
"""The `embedding` of payloads whose vectors are the built-in lexical ones."""
CHUNK_CHARS = 800
MAX_K = 50
MAX_REFS = 16
"""TrexID references (content parts and `trex.context_ref` entries together) one request may carry."""
_THREAD_CELLS = 200_000
"""Vectors times dimensions from which a payload is ranked off the event loop (some 15 ms of scoring)."""
_TERM = re.compile(r"[0-9A-Za-z_]+(?:[.\-/][0-9A-Za-z_]+)*")


def context_text(fmt: Format, body: dict[str, Any]) -> str:
    """The request's text (system, messages and tool output), in conversation order."""
    segments, _ = extract(fmt, body)
    return "\n\n".join(s.text for s in segments if s.text.strip())


def chunks(text: str, limit: int = CHUNK_CHARS) -> list[str]:
    """Paragraphs grouped up to `limit` characters; a longer paragraph is cut at line ends, then hard."""
    pieces: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        while len(para) > limit:
            cut = para.rfind("\n", 0, limit)
            cut = cut if cut > limit // 2 else limit
            pieces.append(para[:cut].strip())
            para = para[cut:].strip()
        if para:
            pieces.append(para)
    out: list[str] = []
    for piece in pieces:
        if out and len(out[-1]) + 2 + len(piece) <= limit:
            out[-1] += "\n\n" + piece
        else:
            out.append(piece)
    return out or [text[:limit] or " "]


def _terms(text: str) -> list[str]:
    return [t.lower() for t in _TERM.findall(text)]


def _slot(term: str) -> tuple[int, float]:
    digest = int.from_bytes(hashlib.blake2b(term.encode(), digest_size=8).digest(), "big")
    return digest % DIMENSIONS, 1.0 if digest >> 63 else -1.0


def _normalised(vec: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vec))
    return [x / norm for x in vec] if norm else vec


def embed(texts: Sequence[str]) -> list[list[float]]:
    """TF-IDF weighted, feature-hashed, L2-normalised vectors, one per text (IDF over these texts)."""
    counts = [Counter(_terms(t)) for t in texts]
    df: Counter[str] = Counter()
    for c in counts:
        df.update(c.keys())
    n = len(texts)
    out = []
    for c in counts:
        vec = [0.0] * DIMENSIONS
        for term, tf in c.items():
            slot, sign = _slot(term)
            vec[slot] += sign * (1 + math.log(tf)) * (math.log((1 + n) / (1 + df[term])) + 1)
        out.append(_normalised(vec))
    return out


def embed_query(query: str) -> list[float]:
    vec = [0.0] * DIMENSIONS
    for term, tf in Counter(_terms(query)).items():
        slot, sign = _slot(term)
        vec[slot] += sign * (1 + math.log(tf))
    return _normalised(vec)


def quantize(vec: Iterable[float], q: QuantParams = QUANT) -> bytes:
    span = q.max - q.min
    return bytes(min(255, max(0, round((x - q.min) / span * 255))) for x in vec)


def dequantize(data: bytes, dimensions: int, q: QuantParams) -> list[float]:
    span = q.max - q.min
    vec = [q.min + b / 255 * span for b in data]
    return vec + [0.0] * (dimensions - len(vec))  # a short vector's missing dimensions are zero


class Embeddings:
    """An OpenAI-compatible `/embeddings` endpoint (`MEMORY_EMBEDDINGS_URL`, e.g. a local server) whose
    vectors replace the lexical ones for stored context and queries."""

    def __init__(self, upstream: UpstreamClient, base_url: str, model: str, api_key: str | None) -> None:
        self.upstream = upstream
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.name = f"provider:{model}"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text; raises EmbeddingsError when the endpoint fails or answers something else."""
        body = json.dumps({"model": self.model, "input": list(texts)}).encode()
        try:
            resp = await self.upstream.request("embeddings", "POST", self.url, body, self._headers)
        except UpstreamUnavailable as exc:
            raise EmbeddingsError(str(exc)) from exc
        try:
            raw = await resp.read()
        finally:
            resp.release()
        if resp.status != 200:
            raise EmbeddingsError(f"the embeddings endpoint answered {resp.status}")
        try:
            rows = sorted(json.loads(raw)["data"], key=lambda r: r["index"])
            vectors = [[float(x) for x in r["embedding"]] for r in rows]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: nested too deep
            raise EmbeddingsError(f"the embeddings endpoint answered an unexpected body: {exc}") from None
        if len(vectors) != len(texts) or not vectors or any(len(v) != len(vectors[0]) for v in vectors):
            raise EmbeddingsError("the embeddings endpoint answered the wrong number or size of vectors")
        return vectors


class EmbeddingsError(Exception):
    pass


def _encoded(vectors: list[list[float]], q: QuantParams) -> list[str]:
    return [base64.b64encode(quantize(v, q)).decode() for v in vectors]


def build(
    summary: str, original: str, ttl_seconds: int, provided: tuple[str, list[list[float]]] | None = None
) -> PushRequest:
    """The TokenZip payload for optimized context (see the module docstring); `provided` = (embedding name,
    one vector per chunk of `original`) from an embeddings endpoint, else the lexical vectors."""
    parts = chunks(original)
    if provided is not None:
        name, vectors = provided
        lo, hi = min(min(v) for v in vectors), max(max(v) for v in vectors)
        q = QuantParams(min=lo, max=hi if hi > lo else lo + 1, method="uniform")
        dims, encoded = len(vectors[0]), _encoded(vectors, q)
    else:
        name, q, dims, encoded = LEXICAL, QUANT, DIMENSIONS, _encoded(embed(parts), QUANT)
    return PushRequest(
        tzp_version="1.0",
        payload=Payload(
            vector_seq_b64=encoded,
            quant_params=q,
            dimensions=dims,
            embedding=name,
            chunk_count=len(parts),
            summary=summary,
            facts=distinct_facts(find_facts(original)),
            original=original,
            chunks=parts,
        ),
        metadata=Metadata(ttl_seconds=ttl_seconds),
    )


async def search(
    stored: Stored, query: str, k: int, provider: Embeddings | None = None
) -> list[tuple[int, float]]:
    """(chunk index, cosine similarity) of the `k` chunks most similar to `query`, best first. The query is
    embedded the way the payload's vectors were: by the configured endpoint for its own payloads, else
    lexically (a payload from elsewhere with chunk texts but other vectors is re-embedded lexically).
    A large payload is ranked off the event loop: the scoring is pure Python."""
    p = stored.payload
    q: list[float] = []
    if provider is not None and p.embedding == provider.name:
        try:
            q = (await provider.embed([query]))[0]
        except EmbeddingsError as exc:
            log.warning("query not embedded by the endpoint (%s); ranking lexically", exc)
    if p.chunk_count * max(p.dimensions, DIMENSIONS) >= _THREAD_CELLS:
        return await asyncio.to_thread(_search, p, q, query, k)
    return _search(p, q, query, k)


def _search(p: Payload, q: list[float], query: str, k: int) -> list[tuple[int, float]]:
    if not q and p.dimensions != DIMENSIONS and p.chunks:
        return _rank(embed_query(query), [_normalised(v) for v in embed(p.chunks)], k)
    q = q or embed_query(query)
    if len(q) != p.dimensions or not any(q):
        return [(i, 0.0) for i in range(min(k, p.chunk_count))]
    return _rank(
        q, [dequantize(base64.b64decode(v), p.dimensions, p.quant_params) for v in p.vector_seq_b64], k
    )


def _rank(q: list[float], vectors: list[list[float]], k: int) -> list[tuple[int, float]]:
    qn = math.sqrt(sum(x * x for x in q)) or 1.0
    scored = []
    for i, vec in enumerate(vectors):
        norm = math.sqrt(sum(x * x for x in vec)) or 1.0
        scored.append((i, round(sum(a * b for a, b in zip(q, vec, strict=True)) / norm / qn, 6)))
    scored.sort(key=lambda s: (-s[1], s[0]))
    return scored[:k]


def parse_expand(raw: Any, where: str) -> str | tuple[str, int] | None:
    """None (summary and facts), "full", or (query, k); 400 naming `where` otherwise."""
    if raw is None or raw == "summary":
        return None
    if raw == "full":
        return "full"
    if isinstance(raw, dict):
        query, k = raw.get("query"), raw.get("k", 5)
        prefix = f"{where}." if where else ""  # "": the query string's own parameters (`/expand?query=&k=`)
        if not isinstance(query, str) or not query.strip():
            message = f"'{prefix}query' must be a non-empty string."
            raise InvalidRequestError(message, param=f"{prefix}query")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidRequestError(
                f"'{prefix}k' must be an integer from 1 to {MAX_K}.", param=f"{prefix}k"
            )
        return query, k
    raise InvalidRequestError(
        f'\'{where}\' must be "summary", "full" or {{"query": …, "k": …}}.', param=where
    )


async def expansion(
    stored: Stored, how: str | tuple[str, int] | None, provider: Embeddings | None = None
) -> str:
    """The text a reference is replaced with."""
    p = stored.payload
    if how == "full":
        return p.original if p.original is not None else p.summary
    if isinstance(how, tuple):
        query, k = how
        hits = await search(stored, query, k, provider)
        texts = [p.chunks[i] for i, _ in hits if i < len(p.chunks)]
        return f"[TrexID {stored.trex_id}: the {len(texts)} passages most relevant to {query!r}]\n\n" + (
            "\n\n".join(texts) or p.summary
        )
    text = f"[TrexID {stored.trex_id}: summary]\n{p.summary}"
    if p.facts:
        text += "\n\nPreserved facts:\n" + "\n".join(f"- {f}" for f in p.facts)
    return text


class _Expander:
    """The state of one `expand_refs` call: the references met so far, the expansions read (each once) and the
    bytes they add. A class rather than closures: a closure that calls itself (nested parts) is a reference
    cycle, which left every request's closures, cells and their locals to the garbage collector."""

    __slots__ = ("added", "count", "done", "limit", "provider", "reader", "size", "store")

    def __init__(
        self, store: PayloadStore, reader: str, provider: Embeddings | None, size: int, limit: int | None
    ) -> None:
        self.store, self.reader, self.provider = store, reader, provider
        self.size, self.limit = size, limit
        self.added = 0
        self.count = 0
        self.done: dict[tuple[str, str | tuple[str, int] | None], str] = {}

    async def text_for(self, ref: dict[str, Any], where: str) -> str:
        self.count += 1
        if self.count > MAX_REFS:
            raise InvalidRequestError(
                f"A request may carry at most {MAX_REFS} TrexID references; '{where}' is one more.",
                param=where,
            )
        trex_id = ref.get("trex_id")
        if not isinstance(trex_id, str) or not trex_id:
            raise InvalidRequestError(f"'{where}.trex_id' must be a TrexID.", param=f"{where}.trex_id")
        how = parse_expand(ref.get("expand"), f"{where}.expand")  # 400 before any lookup
        text = self.done.get((trex_id, how))
        if text is None:
            stored = await self.store.readable(trex_id, self.reader)
            text = self.done[trex_id, how] = await expansion(stored, how, self.provider)
        return text

    def grow(self, text: str, where: str) -> str:
        self.added += len(text.encode())
        if self.limit is not None and self.size + self.added > self.limit:
            raise PayloadTooLargeError(
                f"The TrexID references expand this request past the body limit (MAX_BODY_BYTES) of "
                f"{self.limit:,} bytes, at '{where}'; reference fewer or use a query expansion.",
                param=where,
            )
        return text

    async def expand_parts(self, parts: list[Any], where: str, kind: str, nested: bool = True) -> None:
        for j, part in enumerate(parts):
            if not isinstance(part, dict):
                continue
            if part.get("type") == "trex_ref":
                at = f"{where}[{j}]"
                parts[j] = {"type": kind, "text": self.grow(await self.text_for(part, at), at)}
            elif nested and isinstance(part.get("content"), list):  # a tool_result's own blocks
                await self.expand_parts(part["content"], f"{where}[{j}].content", kind, nested=False)


def may_refer(raw: bytes) -> bool:
    """Whether a request body, as sent, may hold a `trex_ref` part: its bytes name one, or carry a `\\u`
    escape that could spell one. Most bodies do neither, and need not be walked for references."""
    # bytes.find, not `in`: on Python 3.11 `in` first tries the needle as an int, raising and clearing a
    # TypeError each time (a few thousand instructions per request).
    return raw.find(b"trex_ref") != -1 or raw.find(b"\\u") != -1


async def expand_refs(
    store: PayloadStore,
    reader: str,
    fmt: Format,
    body: dict[str, Any],
    trex: Any,
    provider: Embeddings | None = None,
    *,
    size: int = 0,
    limit: int | None = None,
    skip: int = 0,
    sent: Callable[[str], bool] | None = None,
    placed: Callable[[int], None] | None = None,
) -> int:
    """Replace every reference in `body` with its expansion (in place); returns the bytes the expansions
    added. A missing id is a 404 and a foreign one a 403, before anything is forwarded; more than `MAX_REFS`
    references a 400; a request of `size` bytes that its expansions grow past `limit` bytes (the body
    limit) a 413. A reference repeated with the same `expand` is read and expanded once.

    In a session, the first `skip` messages are replaced by what was forwarded for them before (expanded
    then), so they are left alone, and a `trex.context_ref` expansion for which `sent` is true (already in
    that replayed prefix) is not added again."""
    expander = _Expander(store, reader, provider, size, limit)
    part_type = "input_text" if fmt == "responses" else "text"
    field = "input" if fmt == "responses" else "messages"
    items = body.get(field)
    if isinstance(items, list):
        for i, item in enumerate(items):
            if i < skip or not isinstance(item, dict):
                continue
            content = item.get("content")
            if isinstance(content, list):
                # Responses wants output_text in assistant turns, input_text elsewhere.
                kind = "output_text" if fmt == "responses" and item.get("role") == "assistant" else part_type
                await expander.expand_parts(content, f"{field}[{i}].content", kind)
            output = item.get("output") if fmt == "responses" else None
            if isinstance(output, list):  # a Responses tool output given as content parts
                await expander.expand_parts(output, f"{field}[{i}].output", part_type)
    system = body.get("system") if fmt == "messages" else None
    if isinstance(system, list):
        await expander.expand_parts(system, "system", part_type)
    refs = trex.get("context_ref") if isinstance(trex, dict) else None
    if refs is not None:
        if not isinstance(refs, list):
            raise InvalidRequestError(
                "'trex.context_ref' must be a list of TrexIDs.", param="trex.context_ref"
            )
        texts = []
        for i, ref in enumerate(refs):
            entry = {"trex_id": ref, "expand": trex.get("expand")} if isinstance(ref, str) else ref
            if not isinstance(entry, dict):
                raise InvalidRequestError(
                    "'trex.context_ref' must be a list of TrexIDs.", param="trex.context_ref"
                )
            at = f"trex.context_ref[{i}]"
            text = await expander.text_for(entry, at)
            if sent is None or not sent(text):  # else forwarded before, in the replayed prefix: not again
                texts.append(expander.grow(text, at))
        if texts:
            at_item = _add_to_latest_turn(fmt, body, "\n\n".join(texts), part_type)
            if placed is not None and at_item is not None:
                placed(at_item)  # a session must not replay this message's old bytes over the expansion
    return expander.added


def _add_to_latest_turn(fmt: Format, body: dict[str, Any], text: str, part_type: str) -> int | None:
    """Put `trex.context_ref`'s text where the latest turn is, in a shape each provider accepts: at the start
    of the latest user turn, but after the tool_result blocks it opens with (Anthropic wants those first);
    when the conversation ends with a tool result of its own (chat's `tool` message, a Responses
    `*_call_output` item), in a new user message after it rather than in an older user turn. Returns the
    index of the item that holds it (None for a plain-string input)."""
    field = "input" if fmt == "responses" else "messages"
    items = body.get(field)
    if isinstance(items, str):  # Responses with a plain string input
        body[field] = text + "\n\n" + items
        return None
    if not isinstance(items, list):
        raise InvalidRequestError(f"'{field}' must be a list to take trex.context_ref.", param=field)
    part = {"type": part_type, "text": text}
    if items and _is_tool_output(fmt, items[-1]):
        items.append({"role": "user", "content": [part]})
        return len(items) - 1
    for i in range(len(items) - 1, -1, -1):
        item = items[i]
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                item["content"] = [part, {"type": part_type, "text": content}]
            elif isinstance(content, list):
                content.insert(_past_tool_results(content), part)
            else:
                item["content"] = [part]
            return i
    items.append({"role": "user", "content": [part]})
    return len(items) - 1


def _is_tool_output(fmt: Format, item: Any) -> bool:
    """A conversation item that is a tool's answer rather than a user turn."""
    if not isinstance(item, dict):
        return False
    if fmt == "responses":
        return "role" not in item and str(item.get("type", "")).endswith("_call_output")
    return fmt == "chat" and item.get("role") in ("tool", "function")


def _past_tool_results(content: list[Any]) -> int:
    """The index after the last tool_result block of a user turn's content (0 when it has none)."""
    at = 0
    for i, block in enumerate(content):
        if isinstance(block, dict) and block.get("type") == "tool_result":
            at = i + 1
    return at


_THREAD_CHARS = 100_000


def store_option(trex: Any, default_ttl: int) -> int | None:
    """`trex.store_context`: None (do not store), or the TTL to store with (`true` or {"ttl_seconds": N})."""
    raw = trex.get("store_context") if isinstance(trex, dict) else None
    if raw is None or raw is False:
        return None
    if raw is True:
        return default_ttl
    ttl = raw.get("ttl_seconds", default_ttl) if isinstance(raw, dict) else None
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
        bounds = f"{MIN_TTL_SECONDS}..{MAX_TTL_SECONDS}"
        raise InvalidRequestError(
            f"'trex.store_context' must be true or {{\"ttl_seconds\": {bounds}}}.", param="trex.store_context"
        )
    return ttl


async def store(
    payloads: PayloadStore,
    owner: str,
    summary: str,
    original: str,
    ttl: int,
    provider: Embeddings | None = None,
) -> Stored:
    """Build (off the event loop when large) and store the payload for optimized context; owned by `owner`.
    With an embeddings endpoint its vectors are used; if it fails, the lexical ones (and a warning)."""
    provided = None
    if provider is not None:
        try:
            provided = (provider.name, await provider.embed(chunks(original)))
        except EmbeddingsError as exc:
            log.warning("context stored with lexical vectors: %s", exc)
    if len(original) >= _THREAD_CHARS:
        push = await asyncio.to_thread(build, summary, original, ttl, provided)
    else:
        push = build(summary, original, ttl, provided)
    return await payloads.put(owner, push)
