"""``assistantd serve`` and ``assistantd migrate`` (CONTRACT.md)."""

from __future__ import annotations

import argparse
import contextlib
import logging

from assistantd.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="assistantd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="apply migrations, then serve the API under /v1")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes sharing the port (more than one needs PostgreSQL)")
    sub.add_parser("migrate", help="apply the database migrations and exit")
    sandbox = sub.add_parser("sandbox", help="the code-interpreter sandbox image")
    sandbox.add_argument("action", choices=["build"], help="build the image (offline: debootstrap + docker import)")
    sandbox.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)

    if args.command == "sandbox":
        import subprocess

        from assistantd.db.migrate import ROOT

        script = ROOT / "docker" / "sandbox" / "build-offline.sh"
        raise SystemExit(subprocess.call(["bash", str(script), *(["--force"] if args.force else [])]))

    settings = get_settings()
    if args.command == "serve" and args.workers > 1 and settings.sqlalchemy_url.startswith("sqlite"):
        parser.error("--workers above 1 needs PostgreSQL (ASSISTANTD_DATABASE_URL): "
                     "a SQLite database is written by one process")
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a line per migration plugin is noise

    from assistantd.db.migrate import upgrade_to_head

    upgrade_to_head(settings)
    if args.command == "migrate":
        return

    import uvicorn

    _raise_open_files_limit()

    from assistantd.app import create_app

    # Keep idle client connections longer than uvicorn's 5 s default: SDK clients pool them, and a
    # close racing a reuse costs the client a retry.
    options = dict(host=args.host, port=args.port, log_level=settings.log_level.lower(),
                   timeout_graceful_shutdown=5, timeout_keep_alive=75)
    if args.workers > 1:
        # uvicorn's processes share the listening socket; each builds its own app from the same
        # environment and is one of the replicas on the database (DESIGN.md "Many processes").
        uvicorn.run("assistantd.app:create_app", factory=True, workers=args.workers, **options)
    else:
        server = _server_class()(uvicorn.Config(create_app(settings), **options))
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        if not server.started:
            raise SystemExit(3)  # (uvicorn.run's status when the server could not start)


def _server_class():
    """uvicorn's server, looking at its clock once a second instead of ten times.

    ``uvicorn.Server.main_loop`` wakes every 0.1 s to see whether it was told to exit, and redoes
    its ``Date`` header every tenth time. Those wake-ups were ~3.3 ms of CPU a second of an idle
    server (more than all its own background work). Here the loop wakes once a second, which is the
    ``Date`` header's pace, and at once when ``should_exit`` is set (by uvicorn's signal handlers).
    ``--workers`` above 1 keeps uvicorn's own server: its processes make theirs.
    """
    import asyncio

    import uvicorn

    class Server(uvicorn.Server):
        _exit: asyncio.Event | None = None
        _loop: asyncio.AbstractEventLoop | None = None
        _should_exit = False

        @property
        def should_exit(self) -> bool:
            return self._should_exit

        @should_exit.setter
        def should_exit(self, value: bool) -> None:
            self._should_exit = value
            if value and self._exit is not None:
                self._loop.call_soon_threadsafe(self._exit.set)

        async def main_loop(self) -> None:
            self._loop, self._exit = asyncio.get_running_loop(), asyncio.Event()
            if self._should_exit:
                self._exit.set()
            counter = 0  # (on_tick redoes the Date header when counter % 10 == 0: here every tick)
            should_exit = await self.on_tick(counter)
            while not should_exit:
                counter = (counter + 10) % 864000
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._exit.wait()
                should_exit = await self.on_tick(counter)

    return Server


def _raise_open_files_limit() -> None:
    """Let the server hold as many sockets as the system allows it: a streamed run holds two (its
    client's, its model's), and many systems start processes with a soft limit of 1024 files."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


if __name__ == "__main__":
    main()
