"""Search over a vector store's chunks: attribute filters, then lexical scoring.

Part A scores lexically: BM25 (k1 1.2, b 0.75) over the store's chunk tokens, computed in
Python so SQLite and PostgreSQL answer alike, divided by its upper bound for the query (every
query term at saturated frequency) so scores fall in 0..1 and ``score_threshold`` means the same
for any store. Part B fuses this ranking with vector similarity (:func:`rank`'s callers get
``(chunk, score)`` pairs either way).
"""

from __future__ import annotations

import math
import operator
import re
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd.db.models import Chunk, File, VectorStoreFile
from assistantd.vector_stores.schemas import ComparisonFilter, CompoundFilter

K1, B = 1.2, 0.75
_WORD = re.compile(r"\w+", re.UNICODE)


def terms(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# --- filters -----------------------------------------------------------------------------------

_ORDER = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return True
    return isinstance(a, str) and isinstance(b, str)


def matches(flt: ComparisonFilter | CompoundFilter | None, attributes: dict[str, Any]) -> bool:
    if flt is None:
        return True
    if isinstance(flt, CompoundFilter):
        results = (matches(f, attributes) for f in flt.filters)
        return all(results) if flt.type == "and" else any(results)
    present = flt.key in attributes
    have = attributes.get(flt.key)
    if flt.type in ("in", "nin"):
        options = flt.value if isinstance(flt.value, list) else [flt.value]
        found = present and any(_same_kind(have, o) and have == o for o in options)
        return found if flt.type == "in" else not found
    if flt.type == "eq":
        return present and _same_kind(have, flt.value) and have == flt.value
    if flt.type == "ne":
        return not (present and _same_kind(have, flt.value) and have == flt.value)
    if not present or isinstance(flt.value, list) or not _same_kind(have, flt.value) or isinstance(have, bool):
        return False
    return _ORDER[flt.type](have, flt.value)


# --- scoring -----------------------------------------------------------------------------------

def bm25(queries: list[list[str]], docs: list[list[str]]) -> list[float]:
    """Per doc, the best normalised BM25 score (0..1) over the queries."""
    n = len(docs)
    if not n:
        return []
    lengths = [len(d) for d in docs]
    avg = (sum(lengths) / n) or 1.0
    df: Counter[str] = Counter()
    for d in docs:
        df.update(set(d))
    counts = [Counter(d) for d in docs]
    best = [0.0] * n
    for q in queries:
        unique = list(dict.fromkeys(q))
        idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in unique}
        bound = sum(idf.values()) * (K1 + 1)
        if bound <= 0:
            continue
        for i, c in enumerate(counts):
            norm = K1 * (1 - B + B * lengths[i] / avg)
            s = 0.0
            for t in unique:
                tf = c.get(t, 0)
                if tf:
                    s += idf[t] * tf * (K1 + 1) / (tf + norm)
            if s / bound > best[i]:
                best[i] = min(1.0, s / bound)
    return best


async def search(session: AsyncSession, vector_store_id: str, queries: list[str], *,
                 filters: Any = None, max_num_results: int = 10,
                 score_threshold: float = 0.0) -> list[dict[str, Any]]:
    """Ranked results: ``{file_id, filename, score, attributes, text}`` per chunk, best first."""
    files = {f.id: f for f in await session.scalars(select(VectorStoreFile).where(
        VectorStoreFile.vector_store_id == vector_store_id, VectorStoreFile.status == "completed"))}
    allowed = [fid for fid, f in files.items() if matches(filters, f.attributes or {})]
    if not allowed:
        return []
    names = dict((await session.execute(select(File.id, File.filename).where(File.id.in_(allowed)))).all())
    rows = (await session.execute(
        select(Chunk.file_id, Chunk.index, Chunk.text).where(
            Chunk.vector_store_id == vector_store_id, Chunk.file_id.in_(allowed))
        .order_by(Chunk.seq))).all()
    scores = bm25([terms(q) for q in queries], [terms(r.text) for r in rows])
    ranked = sorted(range(len(rows)), key=lambda i: (-scores[i], i))
    out = []
    for i in ranked:
        score = scores[i]
        if score <= 0 or score < score_threshold:
            break
        row = rows[i]
        out.append({"file_id": row.file_id, "filename": names.get(row.file_id, ""), "score": round(score, 6),
                    "attributes": files[row.file_id].attributes or {}, "text": row.text})
        if len(out) >= max_num_results:
            break
    return out
