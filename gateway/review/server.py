"""Serve the review app with uvicorn: inside `gateway run` (same event loop) or alone (`gateway review`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn

from gateway.config import Settings, split_host_port
from gateway.release import ReleaseService
from gateway.review.app import create_app

log = logging.getLogger("gateway.review")


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway owns SIGTERM and stops us itself."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def server(app, settings: Settings) -> EmbeddedServer:
    host, port = split_host_port(settings.review.listen)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            proxy_headers=False, server_header=False)
    return EmbeddedServer(config)


async def start(settings: Settings, service: ReleaseService) -> tuple[EmbeddedServer, asyncio.Task]:
    """Start serving the review app over a running gateway's release service; stop with
    `server.should_exit = True`."""
    srv = server(create_app(settings, service), settings)
    task = asyncio.create_task(srv.serve())
    while not srv.started and not task.done():
        await asyncio.sleep(0.02)
    if task.done():
        task.result()       # raise the start-up error (port in use, ...)
    log.info("review app listening on http://%s", settings.review.listen)
    return srv, task


async def run_alone(settings: Settings, service: ReleaseService) -> None:
    """`gateway review`: serve until SIGTERM or SIGINT. The handlers are installed before the port opens:
    a SIGTERM sent as soon as the app answers stops it cleanly rather than killing the process."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    srv, task = await start(settings, service)
    await asyncio.wait([task, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    srv.should_exit = True
    await task
