"""An inverted-file (IVF) index for a large store's in-process vectors.

Scanning every vector costs one pass over the whole matrix per query (100k × 384 float32 is
153 MB: about 17 ms here). An IVF index groups the vectors around ``√n`` centroids found by
spherical k-means; a query is compared with the centroids and then only with the vectors of its
:data:`PROBE_FRACTION` nearest groups. The store's rows are reordered so that each group is one
contiguous slice of the matrix, which numpy scans at full speed.

It is approximate: a vector whose nearest centroid is not among the probed ones is missed. Real
embeddings cluster by topic, so with a tenth of the groups probed the true top results are
nearly always found (``tests/test_vector_cache.py`` measures the recall on clustered data); the
lexical ranking, fused with this one, does not depend on it. Stores under :data:`MIN_ROWS`
vectors, and searches restricted to some files by ``filters``, scan exactly.

Rows appended after the index was built (newly completed files) are scanned exactly until the
next build (see :class:`assistantd.vector_stores.search.VectorCache`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_ROWS = 20_000  # below this, an exact scan costs a few milliseconds: no index
PROBE_FRACTION = 0.1  # of the groups, compared with each query
TRAINING_PER_LIST = 32  # k-means trains on this many sampled vectors per group
ITERATIONS = 8
ASSIGN_BLOCK = 8192  # rows assigned to groups at a time (bounds the scratch matrix)


@dataclass(frozen=True)
class IVFIndex:
    rows: int  # the index covers rows [0, rows) of the store's matrix, grouped
    centroids: np.ndarray  # (lists, dimensions) float32, unit length
    offsets: np.ndarray  # (lists + 1,) int64: group i is rows offsets[i]:offsets[i + 1]

    @property
    def nprobe(self) -> int:
        return max(1, math.ceil(len(self.centroids) * PROBE_FRACTION))


def _unit(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _nearest(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    out = np.empty(len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), ASSIGN_BLOCK):
        block = vectors[start:start + ASSIGN_BLOCK]
        out[start:start + len(block)] = np.argmax(block @ centroids.T, axis=1)
    return out


def build(vectors: np.ndarray, seed: int = 0) -> tuple[np.ndarray, IVFIndex]:
    """Group ``vectors`` (unit rows). Returns ``order``, the row permutation that makes each
    group contiguous (``vectors[order]`` is the indexed matrix), and the index over it."""
    n = len(vectors)
    lists = max(1, round(math.sqrt(n)))
    rng = np.random.default_rng(seed)
    sample = vectors[np.sort(rng.choice(n, min(n, lists * TRAINING_PER_LIST), replace=False))]
    centroids = sample[rng.choice(len(sample), lists, replace=False)].copy()
    for _ in range(ITERATIONS):
        assign = _nearest(sample, centroids)
        counts = np.bincount(assign, minlength=lists)
        sums = np.zeros_like(centroids)
        _sum_by_group(sums, assign, sample)
        filled = counts > 0  # an empty group keeps its centroid
        centroids[filled] = _unit(sums[filled])
    assign = _nearest(vectors, centroids)
    order = np.argsort(assign, kind="stable")
    offsets = np.zeros(lists + 1, dtype=np.int64)
    np.cumsum(np.bincount(assign, minlength=lists), out=offsets[1:])
    return order, IVFIndex(rows=n, centroids=centroids, offsets=offsets)


def _sum_by_group(out: np.ndarray, assign: np.ndarray, rows: np.ndarray) -> None:
    """``out[g] += rows[i]`` for every i with ``assign[i] == g``, through one sort and a
    segmented sum (``np.add.at`` is unbuffered and far slower)."""
    order = np.argsort(assign, kind="stable")
    groups, starts = np.unique(assign[order], return_index=True)
    out[groups] += np.add.reduceat(rows[order], starts, axis=0)


def candidates(index: IVFIndex, query_vectors: np.ndarray) -> list[tuple[int, int]]:
    """The row slices of the groups nearest to any of the queries, in row order (adjacent
    groups merged)."""
    scores = query_vectors @ index.centroids.T  # (queries, lists)
    nprobe = min(index.nprobe, scores.shape[1])
    chosen = np.unique(np.argpartition(-scores, nprobe - 1, axis=1)[:, :nprobe])
    slices: list[tuple[int, int]] = []
    for group in chosen:
        start, end = int(index.offsets[group]), int(index.offsets[group + 1])
        if start == end:
            continue
        if slices and slices[-1][1] == start:
            slices[-1] = (slices[-1][0], end)
        else:
            slices.append((start, end))
    return slices
