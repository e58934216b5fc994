"""Assemble and run the gateway: settings -> store, policy, pipeline, actions -> listeners.

SIGTERM drains: the listener stops accepting, sessions in flight finish (up to a deadline), then
the process exits.

With `[smtp] workers` > 1 (default 0: one per CPU core) `run` is a supervisor: it spawns that many
worker processes, each with its own listening socket on the same address (SO_REUSEPORT, so the
kernel spreads connections over them), serves /metrics and /healthz itself (adding up the workers'
metrics, prometheus-client multiprocess mode), restarts a worker that dies, and on SIGTERM or
SIGINT passes SIGTERM to every worker and waits for them to drain.

SIGHUP reloads the policy (`Gateway.reload`): the supervisor validates it and, if it loads, passes
SIGHUP on to every worker; each swaps it in between messages. The SMTP listener accepts before the
pipeline is built, so that a restart closes the hop for about a second rather than the seconds the
lexicons take to compile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from gateway import logs, observability
from gateway import policy as policy_module
from gateway.actions import Actions, header_sources
from gateway.config import Settings, split_host_port
from gateway.detectors.antivirus import scanned_header
from gateway.handling import Handling
from gateway.milter.session import MilterServer
from gateway.pipeline import Pipeline
from gateway.quarantine import Store, open_store
from gateway.release import ReleaseService
from gateway.senderauth import authresults, dkimsign
from gateway.smtp.dataread import ByteBudget
from gateway.smtp.server import ConnectionLimiter, GatewaySMTP, Handler

log = logging.getLogger("gateway.app")
T = TypeVar("T")


def build_pipeline(settings: Settings, store: Store | None = None) -> Pipeline:
    """The policy and the site file read and validated, and every detector built from them (its lexicons
    compiled): what start-up and a reload do; raises PolicyError (with file and line) or LexiconError.
    With the store, chain letters are remembered department-wide."""
    return Pipeline(settings, policy_module.load(settings), store=store)


async def in_background(fn: Callable[..., T], *args: object) -> T:
    """`fn` in a thread of its own at a lower CPU priority (Linux: nice 10 for that thread only): building
    a pipeline takes seconds of CPU that must not slow the start of the other workers or the mail in flight."""
    def niced() -> T:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        return fn(*args)

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gateway-build")
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, niced)
    finally:
        pool.shutdown(wait=False)


@dataclass
class Gateway:
    settings: Settings
    store: Store
    pipeline: Pipeline | None
    actions: Actions
    servers: list[asyncio.base_events.Server] = field(default_factory=list)
    limiter: ConnectionLimiter | None = None
    milter: MilterServer | None = None
    observer: observability.Observer | None = None
    _handling: Handling | None = None
    _services: list[ReleaseService] = field(default_factory=list)
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    async def create(cls, settings: Settings, *, warm: bool = False) -> Gateway:
        """`warm`: without the pipeline yet (listen first, then `warm()`); messages wait for it."""
        finishers = dkimsign.finishers(settings)      # reads the DKIM/ARC keys: a bad one stops start-up here
        store = open_store(settings.quarantine.url)
        pipeline = None if warm else build_pipeline(settings, store)
        await store.open()
        actions = Actions(settings, store, finishers=finishers,
                          extra_headers=header_sources(authresults.extra_headers(settings), scanned_header))
        gateway = cls(settings, store, pipeline, actions)
        if settings.notify.enabled:           # notices about held mail (gateway/notify/, docs/notifications.md)
            from gateway.notify.plan import Planner
            actions.planner = Planner(settings)
        recovered = await ReleaseService(settings, store, pipeline, actions).recover()
        if recovered:
            log.warning("interrupted releases back to held: %s", ", ".join(recovered))
        return gateway

    async def warm(self) -> None:
        """Build the pipeline in a thread while the listener already accepts; raises what `build_pipeline` does."""
        async with self._reloading:
            self._swap(await in_background(build_pipeline, self.settings, self.store))
        log.info("pipeline ready in process %d: %s", os.getpid(), ", ".join(self.pipeline.policy.sources))

    async def reload(self) -> bool:
        """Re-read the policy, the site file and the lexicons; swap them in for the next messages. A policy
        that does not load is refused (logged with its file and line) and the current one stays."""
        async with self._reloading:
            started = time.perf_counter()
            try:
                pipeline = await in_background(build_pipeline, self.settings, self.store)
            except Exception as e:
                log.error("policy reload refused, the current policy stays: %s", e)
                return False
            old = self._swap(pipeline)
        log.info("policy reloaded in process %d in %.2f s: %s", os.getpid(), time.perf_counter() - started,
                 ", ".join(pipeline.policy.sources))
        if old is not None:
            asyncio.get_running_loop().create_task(_close_when_idle(old, self.settings.pipeline.message_timeout))
        return True

    def _swap(self, pipeline: Pipeline) -> Pipeline | None:
        old, self.pipeline = self.pipeline, pipeline
        self.handling().swap(pipeline)
        for service in self._services:
            service.pipeline = pipeline
        if self.observer is not None:
            self.observer.detectors = pipeline.detectors
        return old

    def release_service(self) -> ReleaseService:
        """Release/delete/note/legal hold for the CLI, the review app and the API (gateway/release.py)."""
        service = ReleaseService(self.settings, self.store, self.pipeline, self.actions)
        self._services.append(service)          # a reload hands it the new pipeline
        return service

    def handling(self) -> Handling:
        """The one message path both front ends hand their messages to (gateway/handling.py)."""
        if self._handling is None:
            self._handling = Handling(self.pipeline, self.actions)
        return self._handling

    def tls_context(self) -> ssl.SSLContext | None:
        smtp = self.settings.smtp
        if not smtp.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(smtp.tls_cert, smtp.tls_key)
        return context

    async def start_smtp(self, sock: socket.socket | None = None, *, reuse_port: bool = False) -> None:
        """Listen on [smtp] listen (or `sock`); `reuse_port` for workers sharing the address."""
        smtp = self.settings.smtp
        self.limiter = ConnectionLimiter(smtp.max_connections, smtp.max_connections_per_client)
        budget = ByteBudget(smtp.memory_budget)
        handler = Handler(self.settings, self.handling())
        tls = self.tls_context()
        hostname = smtp.hostname or socket.gethostname()

        def factory() -> GatewaySMTP:
            return GatewaySMTP(handler, self.limiter, smtp.data_timeout,
                               data_size_limit=smtp.max_message_size, enable_SMTPUTF8=True,
                               hostname=hostname, tls_context=tls, require_starttls=smtp.require_tls,
                               timeout=smtp.command_timeout, budget=budget, data_reader=smtp.data_reader,
                               spool_threshold=smtp.spool_threshold, spool_dir=smtp.spool_dir)

        loop = asyncio.get_running_loop()
        if sock is None:
            host, port = split_host_port(smtp.listen)
            server = await loop.create_server(factory, host, port, reuse_address=True,
                                              reuse_port=reuse_port)
        else:
            server = await loop.create_server(factory, sock=sock)
        self.servers.append(server)
        log.info("SMTP listening on %s, relaying to %s", smtp.listen, self.settings.relay.next_hop)

    async def start_milter(self, sock: socket.socket | None = None) -> MilterServer:
        self.milter = MilterServer(self.settings, self.handling())
        await self.milter.start(sock)
        return self.milter

    async def start(self) -> None:
        """The front ends the settings enable: [smtp] enabled, [milter] enabled, or both."""
        if self.settings.smtp.enabled:
            await self.start_smtp()
        if self.settings.milter.enabled:
            await self.start_milter()

    async def drain(self, deadline: float = 30.0) -> None:
        """Stop accepting; let sessions in flight finish, up to `deadline` seconds."""
        for server in self.servers:
            server.close()
        if self.milter:
            self.milter.stop_accepting()
        if self.limiter:
            self.limiter.drain()
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while ((self.limiter and self.limiter.active) or (self.milter and self.milter.active)) and loop.time() < end:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        if self.milter:
            await self.milter.close()
        if self.pipeline is not None:
            await self.pipeline.close()
        await self.store.close()


async def _close_when_idle(pipeline: Pipeline, limit: float) -> None:
    """A replaced pipeline: closed once the messages that started with it are done (or after `limit`)."""
    end = time.monotonic() + limit + 5
    while pipeline.active and time.monotonic() < end:
        await asyncio.sleep(0.1)
    try:
        await pipeline.close()
    except Exception:
        log.exception("closing the replaced pipeline")


@contextlib.asynccontextmanager
async def release_service_for(settings: Settings) -> AsyncIterator[ReleaseService]:
    """A gateway's release service without its listeners, closed after (`gateway review` alone, the
    review app in tests): gateway/review/app.py is handed this instead of building a gateway."""
    gateway = await Gateway.create(settings)
    try:
        yield gateway.release_service()
    finally:
        await gateway.close()


async def review_alone(settings: Settings) -> None:
    """`gateway review`: the review app and API alone on [review] listen; SIGHUP reloads the policy that
    a release re-scans with."""
    from gateway.review.server import run_alone

    reloader = Reloader()
    gateway = await Gateway.create(settings)

    async def reload() -> None:
        await gateway.reload()

    reloader.attach(reload)
    try:
        await run_alone(settings, gateway.release_service())
    finally:
        await gateway.close()


class Reloader:
    """SIGHUP -> a reload: installed first thing, so that a SIGHUP received while the process is still
    starting is not lost but done once the gateway is up."""

    def __init__(self) -> None:
        self.target: Callable[[], Awaitable[None]] | None = None
        self.pending = False
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.signal)

    def signal(self) -> None:
        if self.target is None:
            self.pending = True
        else:
            _spawn(self.target())

    def attach(self, target: Callable[[], Awaitable[None]]) -> None:
        self.target = target
        if self.pending:
            self.pending = False
            _spawn(target())


def _spawn(coro) -> asyncio.Task:
    """A task kept referenced until done (a signal handler's work)."""
    task = asyncio.get_running_loop().create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


_tasks: set[asyncio.Task] = set()


def worker_count(settings: Settings) -> int:
    return settings.smtp.workers or os.cpu_count() or 1


def loop_factory():
    """uvloop's event loop where it is installed, else asyncio's: for this process's own runner only
    (the global policy is left alone, so code that embeds the gateway keeps its loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(settings: Settings) -> None:
    """`gateway run`: uvloop where available, then `run` until SIGTERM."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(run(settings))


def preflight(settings: Settings) -> None:
    """What can stop start-up (the policy, detector options, DKIM and ARC keys), checked in the supervisor,
    so that a mistake is reported once, clearly, with exit code 2: the keys before the workers are
    spawned, the policy (seconds of compiling) while they start."""
    build_pipeline(settings)


async def run(settings: Settings) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)       # until the reload handler is installed
    pidfile = Path(settings.smtp.pidfile) if settings.smtp.pidfile else None
    if pidfile is not None:
        pidfile.write_text(f"{os.getpid()}\n")
    try:
        if worker_count(settings) > 1 and settings.smtp.enabled:
            await supervise(settings, worker_count(settings))
        else:
            await serve(settings)
    finally:
        if pidfile is not None and pidfile.read_text().strip() == str(os.getpid()):
            pidfile.unlink(missing_ok=True)


def _stop_event() -> asyncio.Event:
    """Set on SIGTERM or SIGINT; installed first, so a signal during start-up still drains."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def tune_malloc() -> None:
    """glibc: allocations of 1 MB and more always by mmap, so that the memory of a large message goes
    back to the system when it is freed (glibc's dynamic threshold otherwise rises to 32 MB and keeps
    it in the heap: peak RSS with many 10 MB messages was ~40 % higher, docs/performance.md)."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1024 * 1024)          # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


async def serve(settings: Settings, *, smtp: bool = True, services: bool = True, reuse_port: bool = False,
                stop: asyncio.Event | None = None, reloaded: Callable[[], None] | None = None,
                reloader: Reloader | None = None) -> None:
    """One process until SIGTERM: the SMTP listener (`smtp`) and the node's services (`services`: the
    milter front end, the review app, the notifier, /metrics and /healthz). A single process runs both;
    with worker processes the workers run SMTP and the supervisor runs the services.

    The SMTP listener accepts before the pipeline is built (its lexicons take seconds to compile):
    messages received meanwhile wait for it. SIGHUP reloads the policy; `reloaded` is called after a
    reload that succeeded (the supervisor passes it on to the workers)."""
    stop = stop or _stop_event()
    reloader = reloader or Reloader()
    tune_malloc()
    listen_first = smtp and settings.smtp.enabled
    gateway = await Gateway.create(settings, warm=listen_first)

    async def reload() -> None:
        if await gateway.reload() and reloaded is not None:
            reloaded()

    reloader.attach(reload)
    notifier = review = metrics = None
    try:
        if listen_first:
            await gateway.start_smtp(reuse_port=reuse_port)
            warming = asyncio.ensure_future(gateway.warm())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({warming, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not warming.done():      # SIGTERM while warming: refuse new sessions now, finish those in flight
                for server in gateway.servers:
                    server.close()
                if gateway.limiter:
                    gateway.limiter.drain()
            await warming
        if services and settings.notify.enabled:   # sends the outbox's due notices (gateway/notify/notifier.py)
            from gateway.notify.notifier import Notifier
            notifier = Notifier(settings, gateway.store)      # a missing translation catalog stops start-up here
        if services and settings.milter.enabled:
            await gateway.start_milter()
        if notifier is not None:
            await notifier.start()
        if services and settings.review.enabled:   # the ITSD review app and API on [review] listen (gateway/review/)
            from gateway.review.server import start as start_review
            review = await start_review(settings, gateway.release_service())
        if services and settings.metrics.listen:
            gateway.observer = observability.Observer(settings, gateway.store, gateway.pipeline.detectors)
            metrics = await start_metrics(gateway.observer, settings.metrics.listen)
    except BaseException:
        await gateway.close()
        raise
    await stop.wait()
    log.info("stopping: draining sessions in flight")
    await gateway.drain(settings.smtp.drain_timeout)
    if review is not None:
        review[0].should_exit = True
        await review[1]
    if notifier is not None:
        await notifier.stop()
    if metrics:
        await metrics.stop()
    await gateway.close()


async def start_metrics(observer: observability.Observer, listen: str) -> observability.MetricsServer | None:
    """The /metrics and /healthz listener; mail keeps flowing when it cannot bind (logged as an error)."""
    try:
        return await observability.MetricsServer(observer, listen).start()
    except OSError as e:
        log.error("metrics listener on %s not started: %s", listen, e)
        return None


def _worker(settings: Settings, index: int) -> None:
    """A worker process (spawned): the SMTP listener on a SO_REUSEPORT socket; SIGTERM drains it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # the supervisor decides; it sends SIGTERM
    die_with_parent()
    logs.setup(settings.log)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(settings, services=False, reuse_port=True))


def die_with_parent() -> None:
    """Linux: SIGKILL this worker when the supervisor dies, however it dies (a killed supervisor must
    not leave orphans accepting mail with nobody to stop them)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)       # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def supervise(settings: Settings, count: int) -> None:
    dkimsign.finishers(settings)        # a bad key stops start-up before any worker or metrics directory exists
    owned_dir = None
    if not os.environ.get(observability.MULTIPROC_ENV):
        owned_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    else:                   # given by the operator: samples of an earlier run must not be added in
        for stale in Path(os.environ[observability.MULTIPROC_ENV]).glob("*.db"):
            stale.unlink(missing_ok=True)
    observability.enable_multiprocess(os.environ.get(observability.MULTIPROC_ENV) or owned_dir)
    context = multiprocessing.get_context("spawn")
    stop = _stop_event()

    def spawn(index: int):
        process = context.Process(target=_worker, args=(settings, index), name=f"gateway-worker-{index}")
        process.start()
        process.started_at = time.monotonic()
        return process

    workers = [spawn(i) for i in range(count)]      # they inherit SIGHUP ignored until they handle it
    log.info("started %d worker processes: %s", count, ", ".join(str(p.pid) for p in workers))
    reloader = Reloader()           # after the spawns: they inherit SIGHUP ignored, not this handler
    failed = False
    services = None
    try:
        # Checked here while the workers start (a second or two of compiling), not before: listening sooner.
        checking = asyncio.ensure_future(in_background(preflight, settings))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({checking, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if checking.done():
            checking.result()           # a policy that does not load: raised, the workers stopped below
        else:                           # SIGTERM first: the workers drain now, the check is abandoned
            checking.add_done_callback(lambda task: task.cancelled() or task.exception())

        def reloaded() -> None:
            """This process validated the new policy: every worker loads it too."""
            for process in workers:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGHUP)

        # The node's services (milter, review app, notifier, /metrics adding up the workers) run here.
        if not stop.is_set():
            services = asyncio.create_task(serve(settings, smtp=False, stop=stop, reloaded=reloaded,
                                                 reloader=reloader))
        while not stop.is_set():
            # the services stopped by themselves: a start-up error (port in use...)
            if services is not None and services.done():
                failed = True
                stop.set()
                break
            for i, process in enumerate(workers):
                if process.is_alive():
                    continue
                _mark_dead(process.pid)
                if time.monotonic() - process.started_at < 5:
                    log.error("worker %s exited at start-up (code %s): stopping", process.pid, process.exitcode)
                    failed = True
                    stop.set()
                    break
                log.error("worker %s died (code %s): starting another", process.pid, process.exitcode)
                workers[i] = spawn(i)
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
        log.info("stopping: SIGTERM to the workers, waiting for them to drain")
        for process in workers:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + settings.smtp.drain_timeout + 5
        while any(p.is_alive() for p in workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for process in workers:
            if process.is_alive():
                log.warning("worker %s did not stop in time: killing it", process.pid)
                process.kill()
            process.join(1)
            _mark_dead(process.pid)
    finally:
        stop.set()
        for process in workers:         # preflight refused the policy: the workers go too
            if process.is_alive():
                process.terminate()
                process.join(5)
        try:
            if services is not None:
                await services
        except Exception:
            log.exception("the supervisor's services failed")
            failed = True
        if owned_dir:
            shutil.rmtree(owned_dir, ignore_errors=True)
    if failed:
        raise SystemExit(1)


def _mark_dead(pid: int | None) -> None:
    if pid is not None:
        try:
            from prometheus_client import multiprocess
            multiprocess.mark_process_dead(pid)
        except Exception:
            pass
