"""The FastAPI application: routers under ``/v1``, one error envelope, background sweeps."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

from anyio import to_thread
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from assistantd import __version__
from assistantd.api import errors
from assistantd.api.body import BodyLimitMiddleware
from assistantd.assistants.router import router as assistants_router
from assistantd.db import Database
from assistantd.files.router import router as files_router
from assistantd.files.router import sweep_expired
from assistantd.files.storage import FileStore
from assistantd.settings import Settings, get_settings
from assistantd.runs import tokens
from assistantd.sandbox.pool import SandboxPool
from assistantd.runs.fast import CreateRunFastPath
from assistantd.runs.executor import RunExecutor
from assistantd.runs.pgbus import event_bus_for
from assistantd.runs.queue import RunQueue
from assistantd.runs.store import RunStore
from assistantd.runs.worker import RunWorker
from assistantd.runs.router import router as runs_router
from assistantd.threads.router import router as threads_router
from assistantd.tools.registry import ToolRegistry, ToolServices
from assistantd.upstream.client import UpstreamClient
from assistantd.vector_stores import embeddings, pgvector, reembed
from assistantd.vector_stores.ingest import Ingester
from assistantd.vector_stores.search import Searcher
from assistantd.vector_stores.router import router as vector_stores_router
from assistantd.workers import Workers

log = logging.getLogger("assistantd")

GC_YOUNG_THRESHOLD = 5_000  # net allocations between collections of the youngest generation (see lifespan)


async def _supervise(name: str, interval: float, job, *args, woken: asyncio.Event | None = None) -> None:
    """Run ``job`` every ``interval`` seconds, and at once when ``woken`` is set; a failure is
    logged, never fatal."""
    while True:
        if woken is not None:
            woken.clear()  # (before the job: a wake-up during it means another run)
        try:
            await job(*args)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background job %s failed", name)
        if woken is None:
            await asyncio.sleep(interval)
            continue
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await woken.wait()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if not settings.api_keys:
            log.warning(
                "ASSISTANTD_API_KEYS is not set: open mode, every request is accepted and all "
                "clients share one tenant. Set it to require keys."
            )
        app.state.settings = settings
        app.state.db = Database(settings.sqlalchemy_url)
        app.state.files = FileStore(settings.files_dir)
        app.state.bus = event_bus_for(settings.event_bus, settings.sqlalchemy_url)
        await app.state.bus.start()  # listening before the first stream subscribes
        app.state.upstream = UpstreamClient(
            settings.upstream_base_url, settings.resolved_upstream_api_key,
            connect_timeout=settings.upstream_connect_timeout, read_timeout=settings.upstream_read_timeout,
            max_line_bytes=settings.upstream_max_line_bytes,
        )
        await to_thread.run_sync(tokens.warm_up)
        embedder = embeddings.from_setting(settings.embeddings, app.state.upstream, settings.models_dir)
        query_embedder = embedder
        if isinstance(embedder, embeddings.LocalEmbedder):
            # Ingestion batches use both cores; a query is one short text, embedded on one
            # thread beside the search's other work (two threads there only contend).
            query_embedder = embeddings.LocalEmbedder(settings.models_dir, threads=1)
            for model in (embedder, query_embedder):  # load and check the model now, not on first use
                await to_thread.run_sync(model.warm_up)
        pg = await pgvector.prepare(app.state.db) if embedder is not None else None
        app.state.searcher = Searcher(query_embedder, pgvector=pg, rankings=settings.search_rankings)
        # This process among the replicas on the database (who is alive: sandboxes a dead one
        # owned are reclaimed); registered before any background work starts.
        app.state.workers = Workers(app.state.db)
        await app.state.workers.register()
        app.state.sandboxes = SandboxPool(settings, app.state.db, app.state.workers)
        await app.state.sandboxes.start()
        app.state.store = RunStore(app.state.db, app.state.bus)
        tools = ToolRegistry.build(ToolServices(app.state.sandboxes, app.state.searcher,
                                                settings.file_search_ready_seconds))
        executor = RunExecutor(app.state.store, app.state.upstream, app.state.files, settings, tools)
        queue = RunQueue(app.state.db, app.state.workers.id)  # one worker id per process
        app.state.worker = RunWorker(executor, app.state.store, queue, settings.max_concurrent_runs)
        await app.state.worker.start()
        ingester = Ingester(app.state.db, app.state.files, embedder, pg, app.state.bus)
        cache = app.state.searcher.cache
        app.state.bus.on_signal(reembed.VECTORS_CHANGED, cache.forget)

        def vectors_changed(stores) -> None:
            for store in stores:
                cache.forget(store)
                app.state.bus.broadcast(reembed.VECTORS_CHANGED, store)

        tasks = [
            asyncio.create_task(app.state.workers.beat_forever()),
            asyncio.create_task(_supervise("file expiry", settings.file_sweep_seconds, sweep_expired, app.state)),
            asyncio.create_task(_supervise("sandbox reaping", app.state.sandboxes.reap_interval,
                                           app.state.sandboxes.reap_idle)),
            asyncio.create_task(_supervise("vector store ingestion", ingester.interval, ingester.drain,
                                           woken=ingester.woken)),
        ]
        if isinstance(embedder, embeddings.LocalEmbedder):  # chunks of an earlier form of the model
            tasks.append(asyncio.create_task(reembed.reembed_all(app.state.db, embedder, pg, vectors_changed)))
        # The objects made so far (modules, tables, schemas, the token tables) live as long as the
        # process: moved out of the cyclic collector's reach, its full collections under load no
        # longer scan them (each one held the event loop for tens of ms: the p99 of a stream's start).
        gc.collect()
        gc.freeze()
        # The youngest generation collected after 5,000 net allocations, not 700: a streamed run's
        # objects (rows, events, frames) mostly die young, and at 700 the collector ran ~30 times a
        # second under load, promoting them to be scanned again (GC 3.1 % of the CPU at 50 open
        # streams, traced with gc.callbacks; 1.1 % at 5,000, each young collection ~4 ms).
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await app.state.worker.stop()
            await app.state.bus.close()  # after the worker's last events
            await app.state.sandboxes.close()
            app.state.searcher.close()
            await app.state.upstream.aclose()
            await app.state.db.dispose()

    app = FastAPI(title="assistantd", version=__version__, lifespan=lifespan,
                  openapi_url="/v1/openapi.json", docs_url=None, redoc_url=None)
    errors.install(app)
    # Pure ASGI, each added outside the one before: run creation's fast path (runs/fast.py), then,
    # outermost but for Starlette's own error middleware, the body bound: a body too large is
    # refused before any of it is parsed.
    app.add_middleware(CreateRunFastPath)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    for router in (assistants_router, runs_router, threads_router, files_router, vector_stores_router):
        app.include_router(router, prefix="/v1")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app
