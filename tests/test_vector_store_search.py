"""``POST /v1/vector_stores/{id}/search``: lexical ranking, scores, limits, thresholds and
attribute filters (comparison and compound)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vector_search  # also on the pgvector backend

DOCS = {
    "volcanoes.txt": ("Volcanoes erupt when magma rises through the crust. Lava flows and ash clouds "
                      "follow an eruption.", {"topic": "geology", "year": 2021, "public": True}),
    "baking.txt": ("To bake sourdough bread, feed the starter, mix flour and water, and proof the "
                   "dough overnight before baking.", {"topic": "cooking", "year": 2023, "public": True}),
    "tides.txt": ("Ocean tides are caused by the gravity of the moon and the sun pulling on the "
                  "oceans.", {"topic": "geology", "year": 2019, "public": False}),
    "pasta.md": ("# Pasta\n\nBoil salted water, cook the pasta until al dente, then toss with the "
                 "sauce.", {"topic": "cooking", "year": 2020, "public": False}),
}


@pytest.fixture(scope="module")
def corpus(server):
    from tests.conftest import make_client

    client = make_client(server.base_url)
    store = client.vector_stores.create(name="search corpus")
    ids = {}
    for name, (text, attributes) in DOCS.items():
        vs_file = client.vector_stores.files.upload_and_poll(
            vector_store_id=store.id, file=(name, text.encode()), attributes=attributes, poll_interval_ms=100)
        assert vs_file.status == "completed"
        ids[name] = vs_file.id
    client.close()
    return store.id, ids


def test_matching_chunk_ranks_first(client, corpus):
    vs_id, ids = corpus
    page = client.vector_stores.search(vs_id, query="how does sourdough bread proof?")
    assert page.search_query == ["how does sourdough bread proof?"]
    assert page.has_more is False and page.next_page is None
    first = page.data[0]
    assert first.file_id == ids["baking.txt"] and first.filename == "baking.txt"
    assert first.attributes == {"topic": "cooking", "year": 2023, "public": True}
    assert first.content[0].type == "text" and "sourdough" in first.content[0].text
    scores = [r.score for r in page.data]
    assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
    assert len(page.data) < len(DOCS)  # documents sharing no term score nothing

    lava = client.vector_stores.search(vs_id, query="lava eruption magma")
    assert lava.data[0].file_id == ids["volcanoes.txt"]


def test_query_list_max_results_and_threshold(client, corpus):
    vs_id, ids = corpus
    page = client.vector_stores.search(vs_id, query=["moon gravity", "pasta sauce"])
    assert page.search_query == ["moon gravity", "pasta sauce"]
    assert {r.file_id for r in page.data[:2]} == {ids["tides.txt"], ids["pasta.md"]}
    one = client.vector_stores.search(vs_id, query=["moon gravity", "pasta sauce"], max_num_results=1)
    assert len(one.data) == 1
    everything = client.vector_stores.search(vs_id, query="the")
    top = max(r.score for r in everything.data)
    strict = client.vector_stores.search(vs_id, query="the", ranking_options={"score_threshold": top})
    assert strict.data and all(r.score >= top for r in strict.data)
    none = client.vector_stores.search(vs_id, query="the", ranking_options={"score_threshold": 1.0},
                                       rewrite_query=True)
    assert all(r.score >= 1.0 for r in none.data)
    assert client.vector_stores.search(vs_id, query="zebra quantum").data == []


@pytest.mark.parametrize("filters, expected", [
    ({"type": "eq", "key": "topic", "value": "cooking"}, {"baking.txt", "pasta.md"}),
    ({"type": "ne", "key": "topic", "value": "cooking"}, {"volcanoes.txt", "tides.txt"}),
    ({"type": "gt", "key": "year", "value": 2020}, {"volcanoes.txt", "baking.txt"}),
    ({"type": "gte", "key": "year", "value": 2020}, {"volcanoes.txt", "baking.txt", "pasta.md"}),
    ({"type": "lt", "key": "year", "value": 2020}, {"tides.txt"}),
    ({"type": "lte", "key": "year", "value": 2020}, {"tides.txt", "pasta.md"}),
    ({"type": "eq", "key": "public", "value": True}, {"volcanoes.txt", "baking.txt"}),
    ({"type": "and", "filters": [{"type": "eq", "key": "topic", "value": "geology"},
                                 {"type": "eq", "key": "public", "value": False}]}, {"tides.txt"}),
    ({"type": "or", "filters": [{"type": "eq", "key": "topic", "value": "cooking"},
                                {"type": "and", "filters": [{"type": "lt", "key": "year", "value": 2020}]}]},
     {"baking.txt", "pasta.md", "tides.txt"}),
    ({"type": "eq", "key": "missing", "value": "x"}, set()),
])
def test_filters(client, corpus, filters, expected):
    vs_id, ids = corpus
    # "the" occurs in every document, so without filters all four match.
    page = client.vector_stores.search(vs_id, query="the", filters=filters, max_num_results=50)
    names = {name for name, fid in ids.items() if fid in {r.file_id for r in page.data}}
    assert names == expected


def test_search_moves_last_active_at(client, corpus, server, backend):
    """A search is activity: ``last_active_at`` (kept to the minute) and the expiry anchored to it move."""
    import sqlite3
    import time

    if backend != "sqlite":
        pytest.skip("moves last_active_at in the SQLite file directly")
    vs_id, _ = corpus
    client.vector_stores.update(vs_id, expires_after={"anchor": "last_active_at", "days": 2})
    hour_ago = int(time.time()) - 3600
    with sqlite3.connect(server.data_dir / "assistantd.db") as db:
        db.execute("UPDATE vector_stores SET last_active_at = ?, expires_at = ? WHERE id = ?",
                   (hour_ago, hour_ago + 2 * 86400, vs_id))
    assert client.vector_stores.retrieve(vs_id).last_active_at == hour_ago
    client.vector_stores.search(vs_id, query="tides")
    store = client.vector_stores.retrieve(vs_id)
    assert store.last_active_at >= int(time.time()) - 5
    assert store.expires_at == store.last_active_at + 2 * 86400


def test_failed_and_in_progress_files_are_not_searched(client):
    store = client.vector_stores.create()
    client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("bad.bin", b"\x00\x01 tides"),
                                               poll_interval_ms=100)
    assert client.vector_stores.search(store.id, query="tides").data == []


def test_static_chunks_respect_size_and_overlap(client):
    from assistantd.runs import tokens

    words = " ".join(f"word{i}" for i in range(600))
    store = client.vector_stores.create()
    vs_file = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("long.txt", words.encode()), poll_interval_ms=100,
        chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50}})
    assert vs_file.status == "completed"
    page = client.vector_stores.search(store.id, query="word300", max_num_results=50)
    # With a stride of 50 tokens every token sits in two windows: two chunks hold the word, and
    # they rank first (the others only resemble the query to the embedding model).
    holding = [r for r in page.data if "word300" in r.content[0].text.split()]
    assert len(holding) == 2 and page.data[:2] == holding
    for result in page.data:
        assert tokens.count(result.content[0].text) <= 100
    everything = client.vector_stores.search(store.id, query="word0 word599", max_num_results=50)
    assert {r.content[0].text.split()[0] for r in everything.data} >= {"word0"}
