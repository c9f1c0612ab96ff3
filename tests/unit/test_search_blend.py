"""How a search blends its lexical and vector scores (vector_stores/search.py), the rows of a
cached store's chunks (StoreVectors.rows_of), which rankings ASSISTANTD_SEARCH_RANKINGS makes, and
the vector cache forgetting a store whose vectors changed (VectorCache.forget)."""

from __future__ import annotations

import numpy as np
import pytest

from assistantd.vector_stores.search import LEXICAL_WEIGHT, Searcher, StoreVectors, _cosines, blend


def test_both_rankings_blend_cosine_and_lexical_fraction():
    scores = blend({1: 8.0, 2: 2.0}, {1: 0.5, 2: 0.5, 3: 0.6})
    w = LEXICAL_WEIGHT
    assert scores[1] == pytest.approx((0.5 + w) / (1 + w))
    assert scores[2] == pytest.approx((0.5 + w * 0.25) / (1 + w))
    assert scores[3] == pytest.approx(0.6 / (1 + w))  # a vector match that no word matched
    assert scores[1] > scores[3] > scores[2]  # the lexical match tips a near tie, not a clear gap
    assert blend({1: 1.0}, {1: 1.0}) == {1: 1.0}  # the best of both is 1


def test_one_ranking_alone_scores_as_that_ranking():
    assert blend({1: 4.0, 2: 1.0}, None) == {1: 1.0, 2: 0.25}  # lexical: the fraction of the best
    assert blend({}, {1: 0.7, 2: -0.1}) == {1: 0.7, 2: 0.0}  # vector: the cosine, never below 0
    assert blend({}, None) == {}
    assert blend({}, {}) == {}


def test_scores_stay_within_0_and_1():
    scores = blend({1: 3.0, 2: 0.0}, {1: 1.0, 2: -1.0})
    assert all(0.0 <= s <= 1.0 for s in scores.values()) and scores[1] == 1.0 and scores[2] == 0.0


def test_rows_of_finds_chunks_in_a_reordered_matrix():
    seqs = np.array([40, 10, 30, 20], dtype=np.int64)  # (an indexed store's rows are in group order)
    vectors = np.eye(4, dtype=np.float32)
    stored = StoreVectors(files_seen={}, seqs=seqs, files=np.zeros(4, np.int32), file_ids=["f"], vectors=vectors)
    rows, found = stored.rows_of([20, 99, 40])
    assert list(found) == [20, 40] and list(seqs[rows]) == [20, 40]
    query = np.array([[0.0, 0.0, 0.0, 1.0]], dtype=np.float32)  # row 3 holds seq 20
    assert _cosines(stored, query, [20, 40, 5]) == {20: 1.0, 40: 0.0}
    empty = StoreVectors(files_seen={}, seqs=np.zeros(0, np.int64), files=np.zeros(0, np.int32), file_ids=[],
                         vectors=np.zeros((0, 4), np.float32))
    assert _cosines(empty, query, [1]) == {}


def test_rankings_setting_picks_what_a_search_makes():
    class Model:
        model_id, min_similarity = "m", 0.2

    hybrid, lexical, vector = (Searcher(Model(), rankings=r) for r in ("hybrid", "lexical", "vector"))
    try:
        assert hybrid.lexical and hybrid.embedder is not None
        assert lexical.lexical and lexical.embedder is None
        assert not vector.lexical and vector.embedder is not None
        with pytest.raises(ValueError, match="ASSISTANTD_SEARCH_RANKINGS"):
            Searcher(Model(), rankings="bm25")
    finally:
        for searcher in (hybrid, lexical, vector):
            searcher.close()


def _vectors(completed: dict[str, int], rows: int) -> StoreVectors:
    return StoreVectors(files_seen=dict(completed), seqs=np.arange(rows, dtype=np.int64),
                        files=np.zeros(rows, np.int32), file_ids=["f"],
                        vectors=np.eye(max(rows, 1), 4, dtype=np.float32)[:rows])


def test_a_forgotten_store_is_read_again_and_a_load_under_way_is_not_kept():
    import asyncio

    from assistantd.vector_stores.search import VectorCache

    cache, loads = VectorCache(), []

    async def load(session, key, completed, base):
        loads.append(key)
        await asyncio.sleep(0)
        if len(loads) == 2:
            cache.forget("vs_a")  # the vectors change while this load reads them
        return _vectors(completed, len(loads))

    cache._load = load
    completed = {"f": 1}

    async def scenario():
        first = await cache.get(None, "vs_a", "m", completed)
        assert await cache.get(None, "vs_a", "m", completed) is first and len(loads) == 1  # cached
        cache.forget("vs_a")
        second = await cache.get(None, "vs_a", "m", completed)  # read again; forgotten meanwhile
        assert len(loads) == 2 and len(second.seqs) == 2
        third = await cache.get(None, "vs_a", "m", completed)  # so it was not kept
        assert len(loads) == 3 and len(third.seqs) == 3
        assert await cache.get(None, "vs_a", "m", completed) is third  # this one was
        cache.forget("vs_b")  # another store's change leaves this one cached
        assert await cache.get(None, "vs_a", "m", completed) is third and len(loads) == 3

    asyncio.run(scenario())
