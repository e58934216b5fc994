"""The ITSD review web app: Starlette, server-rendered Jinja2 pages, one routes table.

It talks only to the store and the release service (gateway/release.py), the same ones the CLI
and the JSON API use, so the role checks and the audit rows are the same on every path.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import importlib.resources
import io
import json
import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway import accounts, findinggroups
from gateway.config import Settings
from gateway.notify.notifier import link_secret
from gateway.quarantine import SORTS, STATUSES, Query
from gateway.release import Refused, ReleaseService, may
from gateway.review import charts, render
from gateway.review.auth import LOGIN_COOKIE, Auth, Authenticator, client_bucket
from gateway.review.pages import (
    MAX_FORM_IDS,
    Ctx,
    back,
    csrf_failed,
    ctx,
    form_of,
    login_needed,
    page,
    safe_next,
    user_of,
    when,
)
from gateway.review.pages import (
    client_address as _client,
)
from gateway.review.request import request_page

HERE = Path(str(importlib.resources.files("gateway.review")))      # templates/ and static/, shipped as package data
ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")
PREVIEW_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src 'none'; form-action 'none'; "
               "frame-ancestors 'self'; base-uri 'none'; sandbox")


# --- login ----------------------------------------------------------------------------------------

async def login(request: Request) -> Response:
    c = ctx(request)
    token, cookie = c.auth.login_form_token(request)
    error = ""
    status = 200
    nxt = safe_next(request.query_params.get("next"))
    if request.method == "POST":
        form = await request.form(max_files=0, max_fields=10)
        name = str(form.get("name", ""))[:64]
        nxt = safe_next(str(form.get("next", "/")))
        client = _client(request)
        bucket = client_bucket(client)
        if not c.auth.login_form_ok(request, form.get("csrf")):
            error, status = "The login form expired; please try again.", 403
        elif c.auth.throttle.blocked(bucket, name):
            await c.store.audit(name or "-", "login-throttled", None, "", {"client": client})
            error, status = "Too many failed logins; wait a few minutes and try again.", 429
        else:
            user = await c.store.get_user(name) if accounts.NAME.match(name) else None
            if await asyncio.to_thread(accounts.verify_password, user, str(form.get("password", ""))[:1024]):
                assert user is not None
                c.auth.throttle.succeeded(bucket, name)
                await c.store.audit(name, "login", None, "", {"client": client})
                response = RedirectResponse(nxt, status_code=303)
                c.auth.login(response, user)
                response.delete_cookie(LOGIN_COOKIE, path="/")
                return response
            c.auth.throttle.fail(bucket, name)
            await c.store.audit(name or "-", "login-failed", None, "", {"client": client})
            error, status = "Wrong name or password.", 401
    response = c.templates.TemplateResponse(request, "login.html", {
        "user": None, "csrf": token, "error": error, "next": nxt, "flash": None}, status_code=status)
    if cookie:
        c.auth.set_cookie(response, LOGIN_COOKIE, cookie, 3600)
    return response


async def logout(request: Request) -> Response:
    auth = await user_of(request)
    if auth is None:
        return RedirectResponse("/login", status_code=303)
    form = await form_of(request, auth)
    if form is None:
        return csrf_failed(request, auth)
    await ctx(request).store.audit(auth.user.name, "logout", None, "", {"client": _client(request)})
    response = RedirectResponse("/login", status_code=303)
    await ctx(request).auth.logout(response, auth.user)
    return response


# --- queue ----------------------------------------------------------------------------------------

async def queue(request: Request) -> Response:
    auth = await user_of(request)
    if auth is None:
        return login_needed(request)
    c = ctx(request)
    params = dict(request.query_params)
    params.setdefault("status", "held")
    if params["status"] == "any":
        params["status"] = ""
    error = ""
    try:
        query = Query.from_params(params, limit=c.settings.review.page_size)
    except ValueError as e:
        error, query = str(e), Query(status="held", limit=c.settings.review.page_size)
    result = await c.store.query(query)
    oldest = await c.store.oldest_held()
    held_now = (await c.store.query(Query(status="held", limit=1))).total

    def link(**changes: object) -> str:
        merged = {**{k: v for k, v in request.query_params.items() if v}, **{k: str(v) for k, v in changes.items()}}
        return "/?" + urlencode(merged)

    sort_links = {key: link(sort=key, order="asc" if query.sort == key and query.descending else "desc", offset=0)
                  for key in SORTS}
    requested = await c.store.open_requests([i.id for i in result.items])
    filter_string = urlencode({k: v for k, v in request.query_params.items()
                               if v and k not in ("offset", "limit", "select", "sort", "order")})
    return page(request, "queue.html", auth, 400 if error else 200, items=result.items, total=result.total,
                filter_string=filter_string, select_all=request.query_params.get("select") == "page",
                query=query, params=params, held_now=held_now, requested=requested,
                error=error, counts=await c.store.counts(), choices=await c.store.choices(), now=time.time(),
                reason=findinggroups.reason, oldest=(time.time() - oldest) if oldest else None,
                statuses=STATUSES, sort_links=sort_links, link=link,
                prev=link(offset=max(0, query.offset - query.limit)) if query.offset else None,
                next=link(offset=query.offset + query.limit) if query.offset + query.limit < result.total else None)


async def bulk(request: Request) -> Response:
    """POST /bulk: step=confirm shows what would happen (how many, which need an admin or a second
    approval) and asks again; otherwise it acts and lists what was done and what was refused, and why."""
    auth = await user_of(request)
    if auth is None:
        return login_needed(request)
    form = await form_of(request, auth)
    if form is None:
        return csrf_failed(request, auth)
    c = ctx(request)
    service = c.service
    if form["action"] not in ("release", "delete"):
        return back(request, "/", False, "Choose messages and an action.")
    ids = form["ids"]
    if form["scope"] == "filter":        # every message the queue's filter matches (at most one form's worth)
        try:
            params = {"status": "held", **dict(parse_qsl(form["filter"]))}       # as the queue reads them
            if params["status"] == "any":
                params["status"] = ""
            query = Query.from_params(params, limit=MAX_FORM_IDS)
        except ValueError as e:
            return back(request, "/", False, str(e))
        ids = [i.id for i in (await c.store.query(replace(query, offset=0, limit=MAX_FORM_IDS))).items]
    if not ids:
        return back(request, "/", False, "Choose messages and an action.")
    items = [i for i in [await c.store.get(i, with_raw=False) for i in dict.fromkeys(ids) if ID.match(i)] if i]
    verb = "released" if form["action"] == "release" else "deleted"
    if form["step"] == "confirm":
        plan: dict[str, list] = {"ready": [], "admin": [], "virus": [], "second": [], "not_held": []}
        for item in items:
            if item.status != "held":
                plan["not_held"].append(item)
            elif form["action"] == "delete":
                plan["ready"].append(item)
            elif not may(auth.user, "release", item):
                plan["admin"].append(item)
            elif item.virus_names:
                plan["virus"].append(item)
            elif item.approvals_required > 1:
                plan["second"].append(item)
            else:
                plan["ready"].append(item)
        return page(request, "bulk.html", auth, action=form["action"], verb=verb, items=items, plan=plan,
                    reason=form["reason"])
    done, approved, refused = [], [], []
    for item in items:
        try:
            if form["action"] == "release":
                outcome = await service.release(item.id, auth.user, form["reason"])
            else:
                outcome = await service.delete(item.id, auth.user, form["reason"])
            if outcome.status == "approved":
                approved.append((item, outcome.message))
            elif outcome.status in ("released", "partly-released", "deleted"):
                done.append((item, outcome.message))
            else:
                refused.append((item, outcome.message))
        except Refused as e:
            refused.append((item, str(e)))
    summary = f"{len(done)} {verb}" + (f", {len(approved)} approved (a second reviewer must approve)"
                                       if approved else "") + (f"; {len(refused)} not: " + "; ".join(
        f"{i.id}: {why}" for i, why in refused[:5]) if refused else "")
    return page(request, "bulk_result.html", auth, action=form["action"], verb=verb, done=done + approved,
                refused=refused,
                summary=summary, ok=not refused)


# --- one message ----------------------------------------------------------------------------------

async def message(request: Request) -> Response:
    auth = await user_of(request)
    if auth is None:
        return login_needed(request)
    c = ctx(request)
    item_id = request.path_params["id"]
    item = await c.store.get(item_id) if ID.match(item_id) else None
    if item is None:
        return page(request, "error.html", auth, 404, message="No such held message.")
    rendered = await asyncio.to_thread(render.render, c.settings, item)
    await c.store.audit(auth.user.name, "view", item.id, "", {"client": _client(request)})
    rescan = None
    if request.query_params.get("rescan") and item.raw is not None:
        try:
            rescan = await c.service.rescan(item)
            item = await c.store.get(item.id) or item       # with what the re-scan recorded
        except Refused as e:
            rescan = str(e)
    stored_rescan = item.extra.get("rescan")
    return page(request, "message.html", auth, item=item, r=rendered, rescan=rescan, stored_rescan=stored_rescan,
                approvals=await c.store.approvals(item.id), history=await c.store.audit_log(held_id=item.id),
                release_request=await c.store.release_request(item.id), notices=await c.store.outbox(held_id=item.id),
                notice=item.extra.get("notice", ""), provision=item.extra.get("provision", ""))


async def preview(request: Request) -> Response:
    auth = await user_of(request)
    if auth is None:
        return Response("login required", status_code=401, media_type="text/plain")
    c = ctx(request)
    item_id = request.path_params["id"]
    item = await c.store.get(item_id) if ID.match(item_id) else None
    html = await asyncio.to_thread(render.preview_html, c.settings, item) if item else None
    if html is None:
        return Response("no HTML body", status_code=404, media_type="text/plain")
    return HTMLResponse(html, headers={"Content-Security-Policy": PREVIEW_CSP, "X-Frame-Options": "SAMEORIGIN"})


async def picture(request: Request) -> Response:
    """GET /held/{id}/picture?part=LABEL: the image or PDF page a finding names, blurred, on request only
    (a link the reviewer clicks); audited. Never the original pixels: the reviewer can judge the finding
    without being shown pornography or a readable form."""
    auth = await user_of(request)
    if auth is None:
        return Response("login required", status_code=401, media_type="text/plain")
    c = ctx(request)
    item_id, label = request.path_params["id"], request.query_params.get("part", "")[:300]
    item = await c.store.get(item_id) if ID.match(item_id) else None
    if item is None or item.raw is None or not label:
        return Response("no such picture", status_code=404, media_type="text/plain")
    from gateway.message import images, mime

    def blurred() -> bytes | None:
        return images.thumbnail_for_part(mime.parse(item.raw), label)

    data = await asyncio.to_thread(blurred)
    if data is None:
        return Response("no such picture", status_code=404, media_type="text/plain")
    await c.store.audit(auth.user.name, "view-picture", item.id, "", {"part": label, "client": _client(request)})
    return Response(data, media_type="image/jpeg", headers={
        "Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'",
        "X-Content-Type-Options": "nosniff"})


async def raw(request: Request) -> Response:
    auth = await user_of(request)
    if auth is None:
        return login_needed(request)
    c = ctx(request)
    item_id = request.path_params["id"]
    if not may(auth.user, "download"):
        await c.store.audit(auth.user.name, "download-denied", item_id if ID.match(item_id) else None)
        return page(request, "error.html", auth, 403, message="Only an admin can download the raw message.")
    item = await c.store.get(item_id) if ID.match(item_id) else None
    if item is None or item.raw is None:
        return page(request, "error.html", auth, 404, message="No such message content (purged or unknown).")
    await c.store.audit(auth.user.name, "download", item.id, "", {"client": _client(request), "sha256": item.sha256})
    return Response(item.raw, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{item.id}.eml"'})


async def act(request: Request) -> Response:
    """POST /held/{id}/{release|delete|note|legal-hold}: each with a reason, each audited by the service."""
    auth = await user_of(request)
    if auth is None:
        return login_needed(request)
    item_id, action = request.path_params["id"], request.path_params["action"]
    if not ID.match(item_id) or action not in ("release", "delete", "note", "legal-hold", "answer"):
        return page(request, "error.html", auth, 404, message="No such action.")
    form = await form_of(request, auth)
    if form is None:
        return csrf_failed(request, auth)
    service = ctx(request).service
    url = f"/held/{item_id}"
    try:
        if action == "release":
            outcome = await service.release(item_id, auth.user, form["reason"], form["rcpt"] or None,
                                            confirm=form["confirm"])
            return back(request, url, outcome.status != "failed", outcome.message)
        if action == "delete":
            outcome = await service.delete(item_id, auth.user, form["reason"])
            return back(request, url, True, outcome.message)
        if action == "note":
            await service.note(item_id, auth.user, form["text"] or form["reason"])
            return back(request, url, True, "Note added")
        if action == "answer":
            await service.answer(item_id, auth.user, form["text"] or form["reason"])
            return back(request, url, True, "Answer sent to the sender")
        on = form["on"] == "1"
        await service.legal_hold(item_id, auth.user, on, form["reason"])
        return back(request, url, True, "Legal hold set: the content is kept past retention" if on
                    else "Legal hold removed")
    except Refused as e:
        return back(request, url, False, str(e))


# --- dashboard and audit --------------------------------------------------------------------------

async def dashboard(request: Request) -> Response:
    auth = await user_of(request)
    if auth is None:
        return login_needed(request)
    c = ctx(request)
    days = charts.days_back(14)
    stats = await c.store.stats(since=time.time() - 14 * 86400)
    chart = charts.stacked_bars(stats["per_day"], days)
    oldest = await c.store.oldest_held()
    notify = c.settings.notify
    return page(request, "dashboard.html", auth, chart=chart, stats=stats, counts=await c.store.counts(),
                oldest=(time.time() - oldest) if oldest else None,
                outbox=await c.store.outbox_stats(notify.alert_after), alert_after=notify.alert_after,
                failing=[n for n in await c.store.outbox(limit=500) if n.status == "failed" or (
                    n.status in ("pending", "sending") and n.attempts >= notify.alert_after)][:20])


async def notices_retry(request: Request) -> Response:
    """POST /notices/retry (admin): notices given up go back to the outbox, due now."""
    auth = await user_of(request)
    if auth is None:
        return login_needed(request)
    form = await form_of(request, auth)
    if form is None:
        return csrf_failed(request, auth)
    if auth.user.role != "admin":
        return page(request, "error.html", auth, 403, message="Only an admin can retry failed notices.")
    count = await ctx(request).store.retry_failed_notices()
    await ctx(request).store.audit(auth.user.name, "notices-retry", None, "", {"count": count})
    return back(request, "/dashboard", True, f"{count} failed notice(s) queued again")


AUDIT_PAGE = 100


def audit_filters(request: Request) -> tuple[dict, dict[str, str]]:
    """The audit log's filters from the query string (who, action, message, from, to); ValueError on a bad one."""
    p = request.query_params

    def text(key: str) -> str:
        return re.sub(r"[\x00-\x1f\x7f]", "", p.get(key, "")).strip()[:200]

    shown = {k: text(k) for k in ("who", "action", "message", "since", "until")}
    dates = Query.from_params({"since": shown["since"], "until": shown["until"]})
    return {"actor": shown["who"] or None, "action": shown["action"] or None, "held_id": shown["message"] or None,
            "since": dates.since, "until": dates.until}, shown


async def audit_access(request: Request, refusal: str) -> Response | tuple[Auth, dict, dict[str, str]]:
    """An admin and the audit log's filters (`audit_filters`), or the page that answers instead: the
    login page, 403 with `refusal` for another role, 400 for a bad filter."""
    auth = await user_of(request)
    if auth is None:
        return login_needed(request)
    if auth.user.role != "admin":
        return page(request, "error.html", auth, 403, message=refusal)
    try:
        filters, shown = audit_filters(request)
    except ValueError as e:
        return page(request, "error.html", auth, 400, message=str(e))
    return auth, filters, shown


async def audit_page(request: Request) -> Response:
    access = await audit_access(request, "Only an admin can read the whole audit log.")
    if isinstance(access, Response):
        return access
    auth, filters, shown = access
    store = ctx(request).store
    try:
        offset = min(max(0, int(request.query_params.get("offset", "0") or 0)), 10**9)
    except ValueError as e:
        return page(request, "error.html", auth, 400, message=str(e))
    entries = await store.audit_log(limit=AUDIT_PAGE, offset=offset, **filters)
    total = await store.audit_count(**filters)
    grouped_view = request.query_params.get("group") == "message"
    groups: dict[str, list] = {}
    if grouped_view:
        for e in entries:
            groups.setdefault(e.held_id or "", []).append(e)
    base = {k: v for k, v in shown.items() if v}
    if grouped_view:
        base["group"] = "message"

    def link(**changes: object) -> str:
        return "/audit?" + urlencode({**base, **{k: str(v) for k, v in changes.items()}})

    return page(request, "audit.html", auth, entries=entries, total=total, offset=offset, shown=shown,
                actions=await store.audit_actions(), groups=groups, grouped_view=grouped_view,
                csv_link="/audit.csv?" + urlencode({k: v for k, v in shown.items() if v}),
                group_link=link() if grouped_view else link(group="message"),
                prev=link(offset=max(0, offset - AUDIT_PAGE)) if offset else None,
                next=link(offset=offset + AUDIT_PAGE) if offset + AUDIT_PAGE < total else None)


async def audit_csv(request: Request) -> Response:
    """GET /audit.csv: every entry the filters match (no paging), for records requests; audited."""
    access = await audit_access(request, "Only an admin can export the audit log.")
    if isinstance(access, Response):
        return access
    auth, filters, shown = access
    store = ctx(request).store
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "at_utc", "who", "action", "message", "reason", "detail"])
    offset = 0
    while True:
        batch = await store.audit_log(limit=5000, offset=offset, **filters)
        for e in batch:
            writer.writerow([e.id, when(e.at), csv_cell(e.actor), e.action, e.held_id or "", csv_cell(e.reason),
                             csv_cell(json.dumps(e.detail, sort_keys=True))])
        offset += len(batch)
        if len(batch) < 5000:
            break
    await store.audit(auth.user.name, "audit-export", None, "", {"rows": offset, "filters": shown,
                                                                 "client": _client(request)})
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="audit.csv"'})


def csv_cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (mail-controlled text reaches the log)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


# --- the app --------------------------------------------------------------------------------------

SECURITY_HEADERS = (("Content-Security-Policy", PAGE_CSP), ("X-Frame-Options", "DENY"),
                    ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                    ("Cache-Control", "no-store"), ("Cross-Origin-Opener-Policy", "same-origin"))


async def server_error(request: Request, exc: Exception) -> Response:
    """The 500 page. Starlette sends it from outside every middleware, so it sets the security headers
    itself; it names nothing of the error (that is in the log)."""
    return HTMLResponse("<!doctype html><html><head><meta charset=\"utf-8\"><title>Error</title></head><body>"
                        "<h1>Something went wrong</h1><p>The error was logged. Go back and try again; if it "
                        "happens again, tell the gateway's administrator the time it happened.</p></body></html>",
                        status_code=500, headers=dict(SECURITY_HEADERS))


class SecurityHeaders:
    """Strict defaults on every response; a response may set its own CSP (the HTML preview does)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS:
                    if key not in headers:
                        headers[key] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def routes() -> list:
    from gateway.review import api

    return [
        Route("/", queue),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/bulk", bulk, methods=["POST"]),
        Route("/dashboard", dashboard),
        Route("/notices/retry", notices_retry, methods=["POST"]),
        Route("/request/{token}", request_page, methods=["GET", "POST"]),
        Route("/api/notices", api.notices),
        Route("/audit", audit_page),
        Route("/audit.csv", audit_csv),
        Route("/held/{id}", message),
        Route("/held/{id}/preview", preview),
        Route("/held/{id}/raw", raw),
        Route("/held/{id}/picture", picture),
        Route("/held/{id}/{action}", act, methods=["POST"]),
        Route("/api/held", api.held_list),
        Route("/api/held/{id}", api.held_one),
        Route("/api/held/{id}/{action}", api.held_action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


def create_app(settings: Settings,
               service: ReleaseService | Callable[[], AbstractAsyncContextManager[ReleaseService]]) -> Starlette:
    """The review app over a release service (and its store): a running gateway's, or one the app
    opens in each lifespan and closes after (a factory of async context managers such as
    `lambda: gateway.app.release_service_for(settings)`, for the tests)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        async with contextlib.AsyncExitStack() as stack:
            serving = service if isinstance(service, ReleaseService) else await stack.enter_async_context(service())
            store = serving.store
            secret = settings.review.secret_key or await store.secret("review-cookie-key")
            templates = Jinja2Templates(directory=str(HERE / "templates"))
            templates.env.globals["Markup"] = Markup
            templates.env.globals["groups"] = findinggroups.grouped
            templates.env.tests["picture_part"] = render.is_picture_part
            app.state.ctx = Ctx(settings, serving, Authenticator(settings.review, store, secret), templates,
                                await link_secret(settings, store))
            yield

    app = Starlette(routes=routes(), lifespan=lifespan, exception_handlers={500: server_error})
    app.add_middleware(SecurityHeaders)
    return app
