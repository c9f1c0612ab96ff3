"""The file_search tool in runs (issue 5, items 2, 4, 6, 7): hybrid retrieval with the local
embedding model, the tool-call run step, citation markers → ``file_citation`` annotations, the
assistant's tool settings, thread vector stores made for message attachments, and the other
embeddings modes."""

from __future__ import annotations

import time

import pytest

from tests.conftest import make_client
from tests.support.fake import marker
from tests.support.runs import POLL_MS, assistant, wait_for

pytestmark = pytest.mark.vector_search  # also on the pgvector backend

FILE_SEARCH = {"type": "file_search"}
SEARCH_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"

# Ten short documents on unrelated subjects, and questions that paraphrase each one without
# sharing its key words: lexical search alone cannot answer them.
CORPUS = {
    "volcano.txt": "Magma rising through the crust erupts as lava, ash and gas; Mount Etna in Sicily is "
                   "one of the most active examples.",
    "bread.txt": "Knead the dough for ten minutes, let it prove until doubled, then bake the loaf at "
                 "220 degrees until the crust is golden.",
    "password.txt": "To reset your password, open Settings, choose Security and follow the link that is "
                    "emailed to you.",
    "revenue.txt": "Quarterly revenue grew by twelve percent, driven mostly by subscriptions to the cloud "
                   "storage plan.",
    "cat.txt": "The cat slept on the windowsill all afternoon and purred whenever someone stroked its fur.",
    "train.txt": "The night train to Vienna leaves platform four at 21:40 and has sleeping compartments.",
    "vaccine.txt": "Immunisation trains the body's defences to recognise a pathogen before an infection "
                   "ever happens.",
    "football.txt": "The striker scored twice in the second half and the home side won the match 3-1.",
    "tax.txt": "Self-employed workers must file their income declaration with the revenue service by "
               "the end of January.",
    "piano.txt": "Practise scales slowly with both hands, keeping the wrists relaxed and the fingers curved "
                 "over the keys.",
}
QUESTIONS = {
    "How can I get back into my account if I forgot my login secret?": "password.txt",
    "Which mountain spews molten rock in Italy?": "volcano.txt",
    "How much did the company's sales increase?": "revenue.txt",
    "What did the kitty do during the day?": "cat.txt",
    "When does the overnight rail service to Austria depart?": "train.txt",
    "How do shots protect people from disease?": "vaccine.txt",
    "Who won the soccer game?": "football.txt",
    "What is the deadline for freelancers to submit their earnings statement?": "tax.txt",
    "How should a beginner exercise on the keyboard instrument?": "piano.txt",
    "How long should I work the mixture before baking?": "bread.txt",
}


def _corpus_store(client, files=CORPUS):
    store = client.vector_stores.create(name="corpus")
    batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id, files=[(name, text.encode()) for name, text in files.items()],
        poll_interval_ms=100)
    assert batch.status == "completed" and batch.file_counts.completed == len(files)
    ids = [f.id for f in client.vector_stores.files.list(store.id, limit=100).data]
    return store, {i: client.files.retrieve(i).filename for i in ids}


def test_paraphrased_questions_find_the_right_passage_first(client):
    store, names = _corpus_store(client)
    for question, expected in QUESTIONS.items():
        page = client.vector_stores.search(store.id, query=question, max_num_results=3)
        assert page.data, question
        assert page.data[0].filename == expected, (question, [(r.filename, r.score) for r in page.data])
        assert names[page.data[0].file_id] == expected


def _search_run(client, fake_upstream, question: str, *turns, tools=(FILE_SEARCH,), **resources):
    tag = fake_upstream.script(*turns) if turns else None
    bot = assistant(client, tools=list(tools), **resources)
    content = f"{question} {marker(tag)}" if tag else question
    thread = client.beta.threads.create(messages=[{"role": "user", "content": content}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=bot.id,
                                                   poll_interval_ms=POLL_MS, timeout=60)
    assert run.status == "completed", run.last_error
    return thread, run


def test_run_cites_the_file_it_found(client, fake_upstream):
    store, names = _corpus_store(client)
    # No script: the fake model calls file_search with the question, then quotes the first
    # passage and copies its marker.
    thread, run = _search_run(client, fake_upstream, "How do I reset my password?",
                              tool_resources={"file_search": {"vector_store_ids": [store.id]}})
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    call = steps[0].step_details.tool_calls[0]
    assert call.type == "file_search" and call.id.startswith("call_")
    assert call.file_search.ranking_options.ranker == "default_2024_08_21"
    assert call.file_search.ranking_options.score_threshold == 0.0
    results = call.file_search.results
    assert results and results[0].file_name == "password.txt" and names[results[0].file_id] == "password.txt"
    assert all(r.content is None for r in results)  # content only when include[] asks for it
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)

    full = client.beta.threads.runs.steps.retrieve(step_id=steps[0].id, thread_id=thread.id, run_id=run.id,
                                                   include=[SEARCH_CONTENT])
    first = full.step_details.tool_calls[0].file_search.results[0]
    assert first.content[0].type == "text" and "Settings" in first.content[0].text

    # What the model read: the passages, each under its marker.
    message = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    text = message.content[0].text
    assert "【0:0†password.txt】" in text.value
    [annotation] = text.annotations
    assert annotation.type == "file_citation"
    assert annotation.file_citation.file_id == results[0].file_id
    assert text.value[annotation.start_index:annotation.end_index] == annotation.text == "【0:0†password.txt】"


def test_markers_of_several_calls_and_unknown_markers(client, fake_upstream):
    store, names = _corpus_store(client)
    by_name = {v: k for k, v in names.items()}
    answer = ("Trains: 【0:0†train.txt】. Cats: 【1:0†cat.txt】. Made up: 【7:3†nothing.txt】 and 【1:99†cat.txt】.")
    thread, run = _search_run(
        client, fake_upstream, "two questions",
        {"tool_calls": [{"name": "file_search", "arguments": {"query": "night train to Vienna"}},
                        {"name": "file_search", "arguments": {"query": "cat windowsill purred"}}]},
        {"text": answer},
        tool_resources={"file_search": {"vector_store_ids": [store.id]}})
    message = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    text = message.content[0].text
    assert text.value == answer
    cited = [(a.text, a.file_citation.file_id) for a in text.annotations]
    assert cited == [("【0:0†train.txt】", by_name["train.txt"]), ("【1:0†cat.txt】", by_name["cat.txt"])]
    for a in text.annotations:
        assert text.value[a.start_index:a.end_index] == a.text


def test_assistant_settings_limit_results_and_threshold(client, fake_upstream):
    store, _ = _corpus_store(client)
    tool = {"type": "file_search", "file_search": {"max_num_results": 2,
                                                   "ranking_options": {"score_threshold": 0.3}}}
    thread, run = _search_run(client, fake_upstream, "revenue grew subscriptions", tools=[tool],
                              tool_resources={"file_search": {"vector_store_ids": [store.id]}})
    step = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc").data[0]
    search = step.step_details.tool_calls[0].file_search
    assert search.ranking_options.score_threshold == 0.3
    assert 1 <= len(search.results) <= 2 and all(r.score >= 0.3 for r in search.results)
    assert search.results[0].file_name == "revenue.txt"


def test_without_stores_the_model_is_told_so(client, fake_upstream):
    tag = fake_upstream.script({"tool_calls": [{"name": "file_search", "arguments": {"query": "anything"}}]},
                               {"text": "Nothing to cite."})
    bot = assistant(client, tools=[FILE_SEARCH])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"search {marker(tag)}"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=bot.id, poll_interval_ms=POLL_MS)
    assert run.status == "completed"
    tool_message = fake_upstream.requests(tag)[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and "nothing to search" in tool_message["content"]


def test_attachment_makes_the_thread_store(client, fake_upstream):
    doc = client.files.create(file=("manual.txt", b"The flux capacitor needs 1.21 gigawatts to operate."),
                              purpose="assistants")
    thread = client.beta.threads.create(messages=[{
        "role": "user", "content": "Here is the manual.",
        "attachments": [{"file_id": doc.id, "tools": [FILE_SEARCH]}]}])
    [store_id] = thread.tool_resources.file_search.vector_store_ids
    store = client.vector_stores.retrieve(store_id)
    assert store.expires_after.anchor == "last_active_at" and store.expires_after.days == 7
    vs_file = client.vector_stores.files.retrieve(doc.id, vector_store_id=store_id)
    assert vs_file.status in ("in_progress", "completed")
    # A second attachment goes into the same store.
    other = client.files.create(file=("other.txt", b"Marty drives a DeLorean."), purpose="assistants")
    client.beta.threads.messages.create(thread.id, role="user",
                                        content="How much power does the flux capacitor need?",
                                        attachments=[{"file_id": other.id, "tools": [FILE_SEARCH]}])
    assert client.beta.threads.retrieve(thread.id).tool_resources.file_search.vector_store_ids == [store_id]
    for file_id in (doc.id, other.id):
        polled = client.vector_stores.files.poll(file_id, vector_store_id=store_id, poll_interval_ms=100)
        assert polled.status == "completed"

    bot = assistant(client, tools=[FILE_SEARCH])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=bot.id, poll_interval_ms=POLL_MS)
    assert run.status == "completed", run.last_error
    message = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    annotation = message.content[0].text.annotations[0]
    assert annotation.file_citation.file_id == doc.id and "gigawatts" in message.content[0].text.value


@pytest.mark.parametrize("mode", ["upstream:fake-embedding", "none"])
def test_other_embedding_modes(spawn, mode):
    server = spawn(f"embeddings-{mode.split(':')[0]}", ASSISTANTD_EMBEDDINGS=mode)
    client = make_client(server.base_url)
    store, _ = _corpus_store(client)
    page = client.vector_stores.search(store.id, query="night train Vienna platform", max_num_results=3)
    assert page.data[0].filename == "train.txt"
    assert 0.5 <= page.data[0].score <= 1.0
    # Lexical only: a question that shares no word with any document finds nothing.
    if mode == "none":
        assert client.vector_stores.search(store.id, query="kitty afternoon nap?").data[0].filename == "cat.txt"
        assert client.vector_stores.search(store.id, query="zebra xylophone").data == []
    client.close()


def test_vectors_are_searched_where_the_backend_says(spawn, backend):
    """On PostgreSQL with pgvector the vectors live in an HNSW-indexed column and the search runs
    there; on Debian's PostgreSQL (no pgvector) and SQLite they stay portable bytes only."""
    import asyncio

    import asyncpg

    if backend == "sqlite":
        pytest.skip("checks a PostgreSQL database")
    server = spawn("where-vectors")
    client = make_client(server.base_url)
    store, _ = _corpus_store(client, {k: CORPUS[k] for k in ("cat.txt", "train.txt")})
    assert client.vector_stores.search(store.id, query="a sleepy kitty").data[0].filename == "cat.txt"

    async def inspect():
        conn = await asyncpg.connect(server.env["ASSISTANTD_DATABASE_URL"])
        try:
            column = await conn.fetchval("SELECT count(*) FROM information_schema.columns "
                                         "WHERE table_name = 'chunks' AND column_name = 'embedding_vec'")
            if not column:
                return column, 0, []
            filled = await conn.fetchval("SELECT count(*) FROM chunks WHERE embedding_vec IS NOT NULL")
            indexes = await conn.fetch("SELECT indexdef FROM pg_indexes WHERE indexname LIKE 'ix_chunks_hnsw_%'")
            return column, filled, [r["indexdef"] for r in indexes]
        finally:
            await conn.close()

    column, filled, indexes = asyncio.run(inspect())
    if backend == "pgvector":
        assert column == 1 and filled == 2
        assert len(indexes) == 1 and "hnsw" in indexes[0] and "vector(384)" in indexes[0]
    else:
        assert column == 0
    client.close()


def test_streamed_steps_carry_result_content_when_include_asks(client, http, fake_upstream):
    from tests.support.fake import read_sse

    store, _ = _corpus_store(client, {"piano.txt": CORPUS["piano.txt"]})
    bot = assistant(client, tools=[FILE_SEARCH], tool_resources={"file_search": {"vector_store_ids": [store.id]}})
    for include, expect_content in (([SEARCH_CONTENT], True), ([], False)):
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "how to practise scales"}])
        events = read_sse(http, "POST", f"/v1/threads/{thread.id}/runs",
                          params={"include[]": include} if include else None,
                          json={"assistant_id": bot.id, "stream": True})
        names = [n for n, _ in events]
        assert names[-1] == "done" and "thread.run.completed" in names
        [done] = [d for n, d in events if n == "thread.run.step.completed" and d["type"] == "tool_calls"]
        [result] = done["step_details"]["tool_calls"][0]["file_search"]["results"]
        assert result["file_name"] == "piano.txt"
        assert ("content" in result) is expect_content
        if expect_content:
            assert "scales" in result["content"][0]["text"]
        # The message cites the file in the stream's final message too.
        [message] = [d for n, d in events if n == "thread.message.completed"]
        assert message["content"][0]["text"]["annotations"][0]["type"] == "file_citation"


def test_search_sees_files_added_and_removed_after_it_ran(client):
    """Vectors cached by one search follow the store: a file ingested later is found by meaning
    alone, a removed one is gone."""
    store, names = _corpus_store(client, {"cat.txt": CORPUS["cat.txt"]})
    assert client.vector_stores.search(store.id, query="What did the kitty do?").data[0].filename == "cat.txt"
    client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("train.txt", CORPUS["train.txt"].encode()),
                                               poll_interval_ms=100)
    # No word of this question is in train.txt: only the vector ranking can find it.
    found = client.vector_stores.search(store.id, query="When does the overnight rail service to Austria depart?")
    assert found.data[0].filename == "train.txt"
    [cat_id] = names
    client.vector_stores.files.delete(cat_id, vector_store_id=store.id)
    after = client.vector_stores.search(store.id, query="What did the kitty do?", max_num_results=5)
    assert all(r.file_id != cat_id for r in after.data)


def _attach(client, text: str, *, name: str = "manual.txt"):
    """A thread whose first message attaches a file holding ``text`` (so: a thread vector store)."""
    doc = client.files.create(file=(name, text.encode()), purpose="assistants")
    thread = client.beta.threads.create(messages=[{
        "role": "user", "content": "How much power does the flux capacitor need?",
        "attachments": [{"file_id": doc.id, "tools": [FILE_SEARCH]}]}])
    [store_id] = thread.tool_resources.file_search.vector_store_ids
    return doc, thread, store_id


def _searched(client, thread, run):
    [step] = [s for s in client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
              if s.type == "tool_calls"]
    return step.step_details.tool_calls[0].file_search.results


def test_a_run_waits_for_its_threads_store_not_the_assistants(spawn):
    """Issue 15, item 3: files a message attached a moment ago are still being ingested; the run
    searches them once they are (OpenAI's 60 s wait), while the assistant's own stores are not
    waited for."""
    server = spawn("ready-stores", ASSISTANTD_EMBEDDINGS="upstream:fake-embedding")
    client = make_client(server.base_url)
    doc, thread, store_id = _attach(client, "The flux capacitor needs 1.21 gigawatts. [[slow-embed:1500]]")
    assert client.vector_stores.files.retrieve(doc.id, vector_store_id=store_id).status == "in_progress"
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant(
        client, tools=[FILE_SEARCH]).id, poll_interval_ms=POLL_MS, timeout=60)
    assert run.status == "completed", run.last_error
    assert [r.file_id for r in _searched(client, thread, run)] == [doc.id]
    message = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id).data[0]
    assert "gigawatts" in message.content[0].text.value

    # The assistant's store: searched as it is, ingesting or not.
    slow = client.files.create(file=("slow.txt", b"Flux capacitor power: 1.21 gigawatts. [[slow-embed:6000]]"),
                               purpose="assistants")
    own = client.vector_stores.create(name="assistant's", file_ids=[slow.id])
    bot = assistant(client, tools=[FILE_SEARCH], tool_resources={"file_search": {"vector_store_ids": [own.id]}})
    bare = client.beta.threads.create(messages=[{"role": "user", "content": "How much power does it need?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=bare.id, assistant_id=bot.id,
                                                   poll_interval_ms=POLL_MS, timeout=60)
    assert run.status == "completed", run.last_error
    assert client.vector_stores.files.retrieve(slow.id, vector_store_id=own.id).status == "in_progress"
    assert _searched(client, bare, run) == []
    client.close()


def test_a_run_waits_for_its_threads_store_only_so_long(spawn):
    """Past ASSISTANTD_FILE_SEARCH_READY_SECONDS from the run's creation, the search goes on with
    what is ready."""
    server = spawn("ready-stores-limit", ASSISTANTD_EMBEDDINGS="upstream:fake-embedding",
                   ASSISTANTD_FILE_SEARCH_READY_SECONDS="2")
    client = make_client(server.base_url)
    doc, thread, store_id = _attach(client, "The flux capacitor needs 1.21 gigawatts. [[slow-embed:10000]]")
    started = time.monotonic()
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant(
        client, tools=[FILE_SEARCH]).id, poll_interval_ms=POLL_MS, timeout=60)
    waited = time.monotonic() - started
    assert run.status == "completed", run.last_error
    assert 1.0 <= waited < 8.0, waited  # (the run's created_at is in whole seconds)
    assert client.vector_stores.files.retrieve(doc.id, vector_store_id=store_id).status == "in_progress"
    assert _searched(client, thread, run) == []
    client.close()


def test_a_cancel_ends_the_wait_for_a_store(spawn):
    """A run waiting for its thread's store to be ready is cancelled at once, not after the wait."""
    server = spawn("ready-stores-cancel", ASSISTANTD_EMBEDDINGS="upstream:fake-embedding")
    client = make_client(server.base_url)
    doc, thread, store_id = _attach(client, "The flux capacitor needs 1.21 gigawatts. [[slow-embed:30000]]")
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant(client, tools=[FILE_SEARCH]).id)

    def searching():
        steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
        return any(s.type == "tool_calls" and s.status == "in_progress" for s in steps)
    wait_for(searching, what="the run's file_search call to start")
    time.sleep(0.5)  # (it is waiting for the store: the file takes 30 s to ingest)
    started = time.monotonic()
    client.beta.threads.runs.cancel(run_id=run.id, thread_id=thread.id)
    wait_for(lambda: client.beta.threads.runs.retrieve(run_id=run.id, thread_id=thread.id).status == "cancelled",
             timeout=10, what="the run to be cancelled")
    assert time.monotonic() - started < 5
    assert client.vector_stores.files.retrieve(doc.id, vector_store_id=store_id).status == "in_progress"
    client.close()


def _chunk_sql(server, statement: str, *args):
    """Run ``statement`` (``$1``-style parameters) on the server's database; its rows as tuples."""
    import asyncio
    import sqlite3

    url = server.env.get("ASSISTANTD_DATABASE_URL")
    if not url:
        with sqlite3.connect(server.data_dir / "assistantd.db") as db:
            return db.execute(statement.replace("$1", "?").replace("$2", "?"), args).fetchall()

    import asyncpg

    async def run():
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(statement, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def test_chunks_of_the_earlier_local_model_are_embedded_again(spawn):
    """A store whose vectors the earlier (float32) form of the local model made: the server that
    starts on it embeds its chunks again with the 8-bit model, and then finds paraphrases by
    their meaning, as before."""
    import numpy as np

    from assistantd.vector_stores.embeddings import LEGACY_LOCAL_MODEL_IDS, LOCAL_MODEL_ID

    server = spawn("reembed")
    client = make_client(server.base_url)
    store, _ = _corpus_store(client)
    before = dict(_chunk_sql(server, "SELECT seq, embedding FROM chunks WHERE embedding_model = $1", LOCAL_MODEL_ID))
    assert len(before) == len(CORPUS)
    server.stop()
    # As an earlier version left them: another model's id, and vectors that are not this model's.
    _chunk_sql(server, "UPDATE chunks SET embedding_model = $1, embedding = $2", LEGACY_LOCAL_MODEL_IDS[0],
               np.full(384, 384 ** -0.5, dtype="<f4").tobytes())
    server.start(timeout=120)
    client.vector_stores.search(store.id, query="Who won the soccer game?")  # (cached while it is redone)
    wait_for(lambda: not _chunk_sql(server, "SELECT seq FROM chunks WHERE embedding_model = $1",
                                    LEGACY_LOCAL_MODEL_IDS[0]), timeout=60)
    after = dict(_chunk_sql(server, "SELECT seq, embedding FROM chunks WHERE embedding_model = $1", LOCAL_MODEL_ID))
    assert after.keys() == before.keys()
    for seq, vector in before.items():
        np.testing.assert_allclose(np.frombuffer(after[seq], "<f4"), np.frombuffer(vector, "<f4"), atol=1e-5)
    for question, expected in QUESTIONS.items():
        top = client.vector_stores.search(store.id, query=question, max_num_results=1).data
        assert top and top[0].filename == expected, (question, top)
    assert "embedded 10 chunks again" in server.log()
    client.close()
