"""The ``file_search`` tool inside a run (CONTRACT.md): search the vector stores of the
assistant and the thread with the model's query, record the results on the run step, and give
the model the passages, each headed by a citation marker ``【{i}:{j}†{filename}】`` (i = the
index of this tool call among the run's file_search calls, j = the result's rank). Markers the
model copies into its answer become ``file_citation`` annotations (:mod:`assistantd.tools.annotations`).

Ready stores: files a message attached a moment ago are still being ingested into the thread's
vector store when the run starts. As OpenAI documented ("a 60 second maximum wait in the Run
object when the thread's vector store contains files that are still being processed"; not the
assistant's stores), a search waits for the thread's stores until none of their files is
``in_progress`` or ``ready_seconds`` have passed since the run was created, then searches what is
ready. The wait is at the search, not before the run's first turn: what the model writes before
it calls the tool does not depend on the stores, and a run that never searches never waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import select

from assistantd.db.models import RunStep, Thread, VectorStore
from assistantd.tools import schemas as wire
from assistantd.tools.annotations import citation_marker
from assistantd.tools.base import Tool, ToolContext, ToolFailure, ToolResult, string_argument
from assistantd.vector_stores import service as vector_stores
from assistantd.vector_stores.search import Searcher

DEFAULT_MAX_RESULTS = 20  # OpenAI's default for gpt-4* models; 5 for gpt-3.5-turbo
DEFAULT_MAX_RESULTS_GPT35 = 5
RANKER = "default_2024_08_21"
READY_PAUSES = (0.05, 0.5)  # the first and the longest pause between two looks at stores still ingesting

log = logging.getLogger("assistantd.file_search")


class FileSearch(Tool):
    type = "file_search"
    function = {
        "name": "file_search",
        "description": (
            "Search the files attached to this assistant and thread. Returns the most relevant "
            "passages, each with a citation marker to copy into the answer where it is used."
        ),
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    }
    repeatable = True  # a search only reads (and marks its stores active): running it again is harmless

    def __init__(self, searcher: Searcher, ready_seconds: float = 60.0) -> None:
        self.searcher, self.ready_seconds = searcher, ready_seconds

    async def run(self, arguments: str, ctx: ToolContext) -> ToolResult:
        query = string_argument(arguments, "query")
        max_results, threshold = settings_of(ctx.run.tools, ctx.run.model)
        ranking = wire.FileSearchRankingOptions(ranker=RANKER, score_threshold=threshold)
        number = await _call_number(ctx)
        if not query.strip():
            return ToolResult(wire.FileSearch(ranking_options=ranking, results=[]),
                              "The file_search tool needs a non-empty 'query' string.")

        stores, thread_stores = await store_ids(ctx)
        await wait_until_ready(ctx, thread_stores, ctx.run.created_at + self.ready_seconds)
        results: list[dict[str, Any]] = []
        if stores:
            vectors = await self.searcher.embed_queries([query])
            async with ctx.db.read() as session:
                for store in stores:
                    results += await self.searcher.search(session, store, [query], max_num_results=max_results,
                                                          score_threshold=threshold, query_vectors=vectors)
            async with ctx.db.write() as session:
                for store in await session.scalars(select(VectorStore).where(VectorStore.id.in_(stores),
                                                                             VectorStore.tenant == ctx.run.tenant)):
                    vector_stores.touch(store)
        results = sorted(results, key=lambda r: -r["score"])[:max_results]

        step_results = [wire.FileSearchResult(file_id=r["file_id"], file_name=r["filename"], score=r["score"],
                                              content=[wire.FileSearchResultContent(text=r["text"])])
                        for r in results]
        if not stores:
            output = "No files are attached to this assistant or thread: there is nothing to search."
        elif not results:
            output = f"No passage of the attached files matches {query!r}."
        else:
            output = "\n\n".join(f"{citation_marker(number, j, r['filename'])}\n{r['text']}"
                                  for j, r in enumerate(results))
        return ToolResult(wire.FileSearch(ranking_options=ranking, results=step_results), output,
                          sources={f"{number}:{j}": r["file_id"] for j, r in enumerate(results)})


def settings_of(run_tools: list[dict[str, Any]], model: str) -> tuple[int, float]:
    """``max_num_results`` and ``score_threshold`` from the run's file_search tool settings."""
    tool = next((t for t in run_tools if t.get("type") == "file_search"), {})
    options = tool.get("file_search") or {}
    default = DEFAULT_MAX_RESULTS_GPT35 if model.startswith("gpt-3.5") else DEFAULT_MAX_RESULTS
    max_results = options.get("max_num_results") or default
    threshold = (options.get("ranking_options") or {}).get("score_threshold") or 0.0
    return int(max_results), float(threshold)


async def store_ids(ctx: ToolContext) -> tuple[list[str], list[str]]:
    """The assistant's (as the run took them) and the thread's vector stores, live ones only; and
    of them, the thread's."""
    run = ctx.run
    wanted = list((run.tool_resources or {}).get("file_search", {}).get("vector_store_ids", []))
    of_thread: list[str] = []
    async with ctx.db.read() as session:
        thread = await session.scalar(select(Thread).where(Thread.id == run.thread_id, Thread.tenant == run.tenant))
        if thread is not None:
            of_thread = list((thread.tool_resources or {}).get("file_search", {}).get("vector_store_ids", []))
            wanted += of_thread
        wanted = list(dict.fromkeys(wanted))
        live = {s.id: s for s in await session.scalars(select(VectorStore).where(
            VectorStore.id.in_(wanted), VectorStore.tenant == run.tenant))}
    for store in live.values():
        if vector_stores.is_expired(store):
            # As OpenAI does: a run on a thread whose vector store expired fails.
            raise ToolFailure("server_error", f"The vector store '{store.id}' has expired. Create a new vector store, "
                              "add the files to it and attach it to the assistant or thread.")
    return [w for w in wanted if w in live], [w for w in of_thread if w in live]


async def wait_until_ready(ctx: ToolContext, stores: list[str], deadline: float) -> None:
    """Wait until no file of ``stores`` is ``in_progress``, or the epoch time ``deadline``, or the
    run is asked to stop."""
    pause = READY_PAUSES[0]
    while stores:
        async with ctx.db.read() as session:
            if not await vector_stores.ingesting(session, stores):
                return
        left = deadline - time.time()
        if left <= 0 or ctx.cancelled():
            log.info("run %s searches its thread's vector stores with files still being ingested", ctx.run.id)
            return
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, READY_PAUSES[1])


async def _call_number(ctx: ToolContext) -> int:
    """i of the markers: file_search calls the run made before this one (in earlier steps, then
    earlier in this one)."""
    async with ctx.db.read() as session:
        steps = await session.scalars(select(RunStep.step_details).where(
            RunStep.run_id == ctx.run.id, RunStep.tenant == ctx.run.tenant, RunStep.type == "tool_calls",
            RunStep.id != ctx.step_id))
        earlier = sum(1 for details in steps for c in details.get("tool_calls", [])
                      if c.get("type") == FileSearch.type)
    return earlier + ctx.earlier_in_step.count(FileSearch.type)
