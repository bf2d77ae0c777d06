"""Run the rating app until interrupted, printing where to open it (and the admin page) once it listens."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter

from aiohttp import web

from pfmvg_plugin.rate.app import Settings, build_app


def _summary(settings: Settings) -> str:
    kinds = Counter(i.kind for i in settings.items)
    models = sorted({i.model for i in settings.items})
    no_image = sum(i.image is None for i in settings.items)
    text = (f"{len(settings.items)} items ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}) of "
            f"{len(models)} model(s)")
    if no_image:
        first = next(i for i in settings.items if i.image is None)
        text += f"; {no_image} without an image (first: {first.where}: {first.image_problem})"
    return text


async def _serve(settings: Settings, port: int) -> None:
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else port
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"pfmvg rate: {_summary(settings)}; ratings in {settings.db_path}", file=sys.stderr)
    print(f"pfmvg rate: readers open http://{host}:{bound}/ ; admin page http://{host}:{bound}/admin?key="
          f"{settings.admin_key} ; Ctrl-C stops (every saved rating is already on disk)", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(settings: Settings, port: int) -> None:
    """Listen on ``settings.host:port`` (0: a free port, printed) until SIGINT/SIGTERM."""
    asyncio.run(_serve(settings, port))
