"""The ``file_search`` tool inside a run (CONTRACT.md): search the vector stores of the
assistant and the thread with the model's query, record the results on the run step, and give
the model the passages, each headed by a citation marker ``【{i}:{j}†{filename}】`` (i = the
index of this tool call among the run's file_search calls, j = the result's rank). Markers the
model copies into its answer become ``file_citation`` annotations (:func:`citations`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assistantd.db.models import RunStep, Thread, VectorStore
from assistantd.runs.failures import RunFailure
from assistantd.tools.presentation import string_argument
from assistantd.vector_stores import service as vector_stores

if TYPE_CHECKING:
    from assistantd.runs.executor import RunContext, RunExecutor, Turn

DEFAULT_MAX_RESULTS = 20  # OpenAI's default for gpt-4* models; 5 for gpt-3.5-turbo
DEFAULT_MAX_RESULTS_GPT35 = 5
RANKER = "default_2024_08_21"
MARKER = re.compile(r"【(\d+):(\d+)†([^】]*)】")


def settings_of(run_tools: list[dict[str, Any]], model: str) -> tuple[int, float]:
    """``max_num_results`` and ``score_threshold`` from the run's file_search tool settings."""
    tool = next((t for t in run_tools if t.get("type") == "file_search"), {})
    options = tool.get("file_search") or {}
    default = DEFAULT_MAX_RESULTS_GPT35 if model.startswith("gpt-3.5") else DEFAULT_MAX_RESULTS
    max_results = options.get("max_num_results") or default
    threshold = (options.get("ranking_options") or {}).get("score_threshold") or 0.0
    return int(max_results), float(threshold)


async def store_ids(executor: "RunExecutor", ctx: "RunContext") -> list[str]:
    """The assistant's (as the run took them) and the thread's vector stores, live ones only."""
    run = ctx.run
    wanted = list((run.tool_resources or {}).get("file_search", {}).get("vector_store_ids", []))
    async with executor.db.read() as session:
        thread = await session.scalar(select(Thread).where(Thread.id == run.thread_id))
        if thread is not None:
            wanted += (thread.tool_resources or {}).get("file_search", {}).get("vector_store_ids", [])
        wanted = list(dict.fromkeys(wanted))
        live = {s.id: s for s in await session.scalars(select(VectorStore).where(
            VectorStore.id.in_(wanted), VectorStore.tenant == run.tenant))}
    for store in live.values():
        if vector_stores.is_expired(store):
            # As OpenAI does: a run on a thread whose vector store expired fails.
            raise RunFailure("server_error", f"The vector store '{store.id}' has expired. Create a new vector store, "
                               "add the files to it and attach it to the assistant or thread.")
    return [w for w in wanted if w in live]


async def _call_number(executor: "RunExecutor", ctx: "RunContext", turn: "Turn", call: dict[str, Any]) -> int:
    """i of the markers: file_search calls the run made before this one (in earlier steps, then
    earlier in this one)."""
    async with executor.db.read() as session:
        steps = await session.scalars(select(RunStep.step_details).where(
            RunStep.run_id == ctx.run.id, RunStep.type == "tool_calls", RunStep.id != turn.tool_step.id))
        earlier = sum(1 for details in steps for c in details.get("tool_calls", [])
                      if c.get("type") == "file_search")
    return earlier + sum(1 for c in turn.calls.values() if c["type"] == "file_search" and c["index"] < call["_index"])


async def run(executor: "RunExecutor", ctx: "RunContext", turn: "Turn", call: dict[str, Any]) -> dict[str, Any]:
    query = string_argument(call.get("_arguments", ""), "query")
    max_results, threshold = settings_of(ctx.run.tools, ctx.run.model)
    ranking = {"ranker": RANKER, "score_threshold": threshold}
    number = await _call_number(executor, ctx, turn, call)
    if not query.strip():
        output = "The file_search tool needs a non-empty 'query' string."
        return {**call, "file_search": {"ranking_options": ranking, "results": []}, "_output": output,
                "_results": {}}

    stores = await store_ids(executor, ctx)
    results: list[dict[str, Any]] = []
    if stores:
        searcher = executor.searcher
        vectors = await searcher.embed_queries([query])
        async with executor.db.read() as session:
            for store in stores:
                results += await searcher.search(session, store, [query], max_num_results=max_results,
                                                 score_threshold=threshold, query_vectors=vectors)
        async with executor.db.write() as session:
            for store in await session.scalars(select(VectorStore).where(VectorStore.id.in_(stores))):
                vector_stores.touch(store)
    results = sorted(results, key=lambda r: -r["score"])[:max_results]

    step_results = [{"file_id": r["file_id"], "file_name": r["filename"], "score": r["score"],
                     "content": [{"type": "text", "text": r["text"]}]} for r in results]
    if not stores:
        output = "No files are attached to this assistant or thread: there is nothing to search."
    elif not results:
        output = f"No passage of the attached files matches {query!r}."
    else:
        output = "\n\n".join(f"【{number}:{j}†{r['filename']}】\n{r['text']}" for j, r in enumerate(results))
    markers = {f"{number}:{j}": r["file_id"] for j, r in enumerate(results)}
    return {**call, "file_search": {"ranking_options": ranking, "results": step_results},
            "_output": output, "_results": markers}


async def citation_sources(executor: "RunExecutor", run_id: str) -> dict[str, str]:
    """Every marker ``i:j`` the run's file_search calls handed out → the cited file's id."""
    async with executor.db.read() as session:
        steps = await session.scalars(select(RunStep.step_details).where(
            RunStep.run_id == run_id, RunStep.type == "tool_calls"))
        sources: dict[str, str] = {}
        for details in steps:
            for c in details.get("tool_calls", []):
                if c.get("type") == "file_search":
                    sources.update(c.get("_results") or {})
    return sources


def citations(text: str, sources: dict[str, str]) -> list[dict[str, Any]]:
    """Markers the model copied into ``text`` → ``file_citation`` annotations."""
    found = []
    for match in MARKER.finditer(text):
        file_id = sources.get(f"{match.group(1)}:{match.group(2)}")
        if file_id is None:
            continue
        found.append({"type": "file_citation", "text": match.group(0), "start_index": match.start(),
                      "end_index": match.end(), "file_citation": {"file_id": file_id}})
    return found
