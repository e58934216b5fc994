"""Prometheus metrics and health checks: `/metrics` and `/healthz` as a tiny Starlette app.

Served on `[metrics] listen` (default 127.0.0.1:9025). `routes(observer)` is a plain routes list so
the review app can mount the same endpoints when both land (docs/performance.md).

Recording is a few module-level hooks that any code may call (cheap, never raise):
  message(...)            one per message handled, from gateway/handling.py (label `front`: smtp,
                          milter, or release for a delivery from the quarantine)
  next_hop_error(stage)   relay.py, at connect / MAIL / RCPT / DATA failures
  clamd_health(up)        the clamd client, whenever it learns whether clamd answers
  clamd_scan_error(reason) the clamd client, when a scan could not be done
  spooled()               a message went to disk while being received
  register_outbox_depth(fn) the notifier: an async function returning the outbox depth

With several worker processes (`[smtp] workers`), prometheus-client runs in multiprocess mode:
the parent sets PROMETHEUS_MULTIPROC_DIR before any metric exists, every worker writes its samples
there, and the parent's `/metrics` adds them up. prometheus_client is imported lazily for that reason.

`/healthz` answers 200 when every check passes and 503 otherwise, with a JSON body naming each
check: the quarantine store answers a query, the next hop greets with 220, and every detector that
has an `async def health(self) -> str | None` does not raise (the antivirus: clamd answers PING; it
returns "off", which passes, when no scanner is configured). A detector's `health_details()` is
shown under its name, and its `scrape_values()` are gauges on /metrics, which runs the detectors'
health checks first: so `gateway_clamd_up` is current at every scrape, also in the supervisor of
several workers, where the most recent value of any process wins.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Settings, split_host_port

log = logging.getLogger("gateway.observability")

# Latency buckets in seconds: sub-millisecond stages up to the detector timeout.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1e3, 1e4, 1e5, 1e6, 1e7, 5e7, 1e8)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.messages = Counter("gateway_messages", "Messages handled, by front end (smtp, milter; release for "
                                "a delivery from the quarantine), direction, verdict (action) and rule",
                                ["front", "direction", "verdict", "rule"])
        self.categories = Counter("gateway_message_categories", "Messages with at least one finding of a category",
                                  ["front", "direction", "category"])
        self.replies = Counter("gateway_data_replies", "Replies to DATA by class (2xx, 4xx, 5xx)", ["front", "code"])
        self.stage = Histogram("gateway_stage_seconds", "Time per pipeline stage (parse, detectors, policy, "
                               "action, total)", ["front", "stage"], buckets=BUCKETS)
        self.detector = Histogram("gateway_detector_seconds", "Time per detector", ["detector"], buckets=BUCKETS)
        self.detector_errors = Counter("gateway_detector_errors", "Detector failures and timeouts (error.NAME "
                                       "findings)", ["detector"])
        self.size = Histogram("gateway_message_bytes", "Size of messages received", buckets=SIZE_BUCKETS)
        self.next_hop_errors = Counter("gateway_next_hop_errors", "Failures talking to the next hop", ["stage"])
        self.clamd_up = Gauge("gateway_clamd_up", "1 when clamd answered the last time it was asked, else 0",
                              multiprocess_mode="mostrecent")
        self.clamd_errors = Counter("gateway_clamd_scan_errors", "Scans clamd could not do", ["reason"])
        self.spooled = Counter("gateway_spooled_messages", "Messages spooled to disk while being received")
        self._children: dict[tuple, Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """metric.labels(*labels), remembered: prometheus-client checks and locks on every call (about
        2 us), and a message records some twenty of them. The label values are bounded (detectors,
        stages, directions, verdicts and the policy's rules)."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


_metrics: _Metrics | None = None
_outbox_depth: Callable[[], Awaitable[int]] | None = None


def metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


def _safe(func: Callable[..., None]) -> Callable[..., None]:
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except Exception:           # metrics never break mail handling
            log.exception("recording a metric failed")
    wrapper.__doc__ = func.__doc__
    return wrapper


@_safe
def message(direction: str, verdict: str, rule: str, kinds: tuple[str, ...] | list[str],
            timings_ms: dict[str, float], size: int, reply: str, front: str = "smtp") -> None:
    """One message handled: counters by front/direction/verdict/rule/category and the stage timings.

    A release (front "release") counts under its own label and does not add to the size or detector
    error figures, which the message's receipt already counted."""
    m = metrics()
    m.child(m.messages, front, direction, verdict, rule).inc()
    for category in dict.fromkeys(k.split(".", 1)[0] for k in kinds):
        m.child(m.categories, front, direction, category).inc()
    if front != "release":
        for kind in kinds:
            if kind.startswith("error."):
                m.child(m.detector_errors, kind.removeprefix("error.")).inc()
        m.size.observe(size)
    m.child(m.replies, front, _reply_class(reply)).inc()
    for name, ms in timings_ms.items():
        if name.startswith("detector."):
            m.child(m.detector, name.removeprefix("detector.")).observe(ms / 1000)
        else:
            m.child(m.stage, front, name).observe(ms / 1000)


@_safe
def reply_only(reply: str, front: str = "smtp") -> None:
    """A DATA reply without a pipeline run (internal error)."""
    metrics().replies.labels(front, _reply_class(reply)).inc()


def _reply_class(reply: str) -> str:
    return f"{reply[:1]}xx" if reply[:1].isdigit() else "other"


@_safe
def next_hop_error(stage: str) -> None:
    metrics().next_hop_errors.labels(stage).inc()


@_safe
def clamd_health(up: bool) -> None:
    metrics().clamd_up.set(1 if up else 0)


@_safe
def clamd_scan_error(reason: str = "error") -> None:
    metrics().clamd_errors.labels(reason).inc()


@_safe
def spooled() -> None:
    metrics().spooled.inc()


def register_outbox_depth(source: Callable[[], Awaitable[int]] | None) -> None:
    """The notifier registers how to read its outbox depth; until then the gauge reads 0."""
    global _outbox_depth
    _outbox_depth = source


def enable_multiprocess(directory: str) -> None:
    """Before any metric exists: samples go to files in `directory`, summed by the parent's /metrics."""
    import sys

    os.environ[MULTIPROC_ENV] = directory
    if "prometheus_client" in sys.modules:      # imported early by someone: switch its value class
        from prometheus_client import values
        values.ValueClass = values.get_value_class()


# ---------------------------------------------------------------------------------------------------
# Serving


@dataclass
class Observer:
    """What the endpoints look at: settings, the quarantine store, and the detectors (for health)."""

    settings: Settings
    store: Any
    detectors: list[Any] = field(default_factory=list)


async def scrape_values(observer: Observer) -> dict[str, float]:
    """Gauges read at scrape time from the store, the notifier and the detectors' health probes."""
    values = {"gateway_quarantine_items": math.nan, "gateway_quarantine_oldest_age_seconds": math.nan,
              "gateway_outbox_depth": 0.0}
    await detector_health(observer)
    for detector in observer.detectors:
        source = getattr(detector, "scrape_values", None)
        if source is not None:
            try:
                values.update(source())
            except Exception as e:
                log.warning("%s values unavailable: %s", getattr(detector, "name", detector), e)
    try:
        count, oldest = await quarantine_stats(observer.store)
        values["gateway_quarantine_items"] = float(count)
        values["gateway_quarantine_oldest_age_seconds"] = max(0.0, time.time() - oldest) if oldest else 0.0
    except Exception as e:
        log.warning("quarantine statistics unavailable: %s", e)
    if _outbox_depth is not None:
        try:
            values["gateway_outbox_depth"] = float(await _outbox_depth())
        except Exception as e:
            log.warning("outbox depth unavailable: %s", e)
            values["gateway_outbox_depth"] = math.nan
    return values


async def quarantine_stats(store: Any) -> tuple[int, float | None]:
    """(held items, received_at of the oldest held one)."""
    return await store.held_summary()


_HELP = {
    "gateway_quarantine_items": "Messages held in the quarantine (status held)",
    "gateway_quarantine_oldest_age_seconds": "Age of the oldest held message",
    "gateway_outbox_depth": "Notices waiting in the notifier's outbox (filled by the notifier; 0 until it "
                            "registers)",
    "gateway_clamd_signature_age_seconds": "Age of clamd's newest signature database, from its VERSION reply "
                                           "(NaN when clamd gives no date or does not answer)",
}


def render(values: dict[str, float]) -> bytes:
    """The process's (or all workers') metrics plus the scrape-time gauges, in the text format."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    metrics()       # the families exist (at zero) even before the first message
    text = generate_latest(registry)
    extra = "".join(f"# HELP {name} {_HELP[name]}\n# TYPE {name} gauge\n{name} {_number(value)}\n"
                    for name, value in values.items())
    return text + extra.encode()


def _number(value: float) -> str:
    return "NaN" if math.isnan(value) else repr(float(value))


PASSING = frozenset({"ok", "off"})      # "off": a check of something not configured ([antivirus] clamd = "")


def _detector_checks(observer: Observer) -> dict[str, Callable[[], Awaitable[Any]]]:
    checks = {}
    for detector in observer.detectors:
        probe = getattr(detector, "health", None)
        if probe is not None:
            checks[getattr(detector, "name", type(detector).__name__)] = probe
    return checks


async def detector_health(observer: Observer) -> dict[str, str]:
    """The detectors' checks alone (what /metrics runs before a scrape)."""
    return await _run_checks(_detector_checks(observer), observer.settings.metrics.healthz_timeout)


async def health(observer: Observer) -> dict[str, str]:
    """name -> "ok" (or "off") or what is wrong; every check bounded by [metrics] healthz_timeout."""
    checks: dict[str, Callable[[], Awaitable[Any]]] = {
        "store": lambda: quarantine_stats(observer.store),
        "next_hop": lambda: next_hop_greets(observer.settings),
        **_detector_checks(observer),
    }
    return await _run_checks(checks, observer.settings.metrics.healthz_timeout)


def health_details(observer: Observer) -> dict[str, Any]:
    """The detectors' health_details() by name, after a health run."""
    details = {}
    for detector in observer.detectors:
        source = getattr(detector, "health_details", None)
        if source is not None:
            try:
                details[getattr(detector, "name", type(detector).__name__)] = source()
            except Exception as e:
                log.warning("health details of %s unavailable: %s", getattr(detector, "name", detector), e)
    return details


async def _run_checks(checks: dict[str, Callable[[], Awaitable[Any]]], timeout: float) -> dict[str, str]:
    async def run(name: str, check: Callable[[], Awaitable[Any]]) -> tuple[str, str]:
        try:
            async with asyncio.timeout(timeout):
                status = await check()
            return name, status if isinstance(status, str) and status else "ok"
        except TimeoutError:
            return name, f"no answer within {timeout:g} s"
        except Exception as e:
            return name, f"{type(e).__name__}: {e}"[:300]

    return dict(await asyncio.gather(*(run(n, c) for n, c in checks.items())))


async def next_hop_greets(settings: Settings) -> None:
    """Connect to the next hop, expect a 220 greeting, say QUIT."""
    host, port = split_host_port(settings.relay.next_hop)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        line = await reader.readline()
        while line[3:4] == b"-":
            line = await reader.readline()
        if not line.startswith(b"220"):
            raise ConnectionError(f"next hop greeted with {line[:80]!r}")
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()


def routes(observer: Observer) -> list:
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def metrics_endpoint(request) -> Response:
        values = await scrape_values(observer)
        body = await asyncio.to_thread(render, values)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def healthz_endpoint(request) -> Response:
        results = await health(observer)
        ok = all(v in PASSING for v in results.values())
        body = {"status": "ok" if ok else "failing", "checks": results}
        details = health_details(observer)
        if details:
            body["details"] = details
        return JSONResponse(body, status_code=200 if ok else 503)

    return [Route("/metrics", metrics_endpoint), Route("/healthz", healthz_endpoint)]


def app(observer: Observer):
    from starlette.applications import Starlette
    return Starlette(routes=routes(observer))


class MetricsServer:
    """The Starlette app served by uvicorn in the current event loop, without uvicorn's signal handling."""

    def __init__(self, observer: Observer, listen: str) -> None:
        self.observer, self.listen = observer, listen
        self.server = None
        self.task: asyncio.Future | None = None
        self.port = 0

    async def start(self) -> MetricsServer:
        import uvicorn

        host, port = split_host_port(self.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app(self.observer), log_level="warning", access_log=False, lifespan="off")
        config.load()
        self.server = uvicorn.Server(config)
        # Server.serve() would take over SIGTERM/SIGINT; the gateway handles those itself.
        self.task = asyncio.ensure_future(self.server._serve(sockets=[sock]))
        while not self.server.started and not self.task.done():
            await asyncio.sleep(0.01)
        if self.task.done():
            self.task.result()
        log.info("metrics and health on http://%s:%s/metrics and /healthz", host, self.port)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            await self.task
            self.server = None
