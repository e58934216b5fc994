"""The ITSD review web app: Starlette, server-rendered Jinja2 pages, one routes table.

It talks only to the store and the release service (gateway/release.py), the same ones the CLI
and the JSON API use, so the role checks and the audit rows are the same on every path.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway import accounts
from gateway.config import Settings
from gateway.quarantine import SORTS, STATUSES, Query
from gateway.release import Refused, ReleaseService, may
from gateway.review import charts, render
from gateway.review.auth import FLASH_COOKIE, LOGIN_COOKIE, SESSION_COOKIE, Auth, Authenticator
from gateway.review.request import request_page

HERE = Path(str(importlib.resources.files("gateway.review")))      # templates/ and static/, shipped as package data
ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")
PREVIEW_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src 'none'; form-action 'none'; "
               "frame-ancestors 'self'; base-uri 'none'; sandbox")
MAX_FORM_IDS = 500


@dataclass
class Ctx:
    settings: Settings
    gateway: object
    service: ReleaseService
    auth: Authenticator
    templates: Jinja2Templates
    link_secret: str = ""          # signs the senders' release-request links (gateway/notify/)

    @property
    def store(self):
        return self.service.store


def ctx(request: Request) -> Ctx:
    return request.app.state.ctx


# --- responses ------------------------------------------------------------------------------------

def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "-"


def page(request: Request, template: str, auth: Auth | None, status: int = 200, **context) -> Response:
    c = ctx(request)
    response = c.templates.TemplateResponse(request, template, {
        "user": auth.user if auth else None, "csrf": auth.csrf if auth else "", "may": may,
        "flash": c.auth.read_flash(request), "when": when, "age": age, **context}, status_code=status)
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return finish(request, response)


def finish(request: Request, response: Response) -> Response:
    new_session = getattr(request.state, "new_session", None)
    if new_session:
        ctx(request).auth.set_cookie(response, SESSION_COOKIE, new_session,
                                     ctx(request).settings.review.session_minutes * 60)
    return response


def back(request: Request, url: str, ok: bool | None = None, message: str = "") -> Response:
    response = RedirectResponse(url, status_code=303)
    if ok is not None:
        ctx(request).auth.flash(response, ok, message)
    return finish(request, response)


def safe_next(value: str | None) -> str:
    value = value or "/"
    return value if value.startswith("/") and not value.startswith("//") and "\\" not in value else "/"


async def user_of(request: Request) -> Auth | None:
    """The browser's user: the session cookie, or the trusted SSO header (which then gets a session)."""
    c = ctx(request)
    session = await c.auth.from_session(request)
    if not (c.auth.trusted_proxy(request) and request.headers.get(c.settings.review.trusted_header)):
        return session
    proxied = await c.auth.from_proxy(request)       # the proxy vouches for this name, or for nobody
    if proxied is None:
        return None
    if session and session.user.name == proxied.name:
        return session
    value, csrf = c.auth.session_value(proxied.name)
    request.state.new_session = value
    await c.store.audit(proxied.name, "login", None, "", {"via": "proxy", "client": _client(request)})
    return Auth(proxied, csrf, "proxy")


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def login_needed(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


async def form_of(request: Request, auth: Auth) -> dict | None:
    """The POSTed form, or None when its CSRF token is wrong."""
    form = await request.form(max_files=0, max_fields=MAX_FORM_IDS + 20)
    if not ctx(request).auth.csrf_ok(auth.csrf, form.get("csrf")):
        return None
    return {"reason": str(form.get("reason", ""))[:4000], "ids": [str(v) for v in form.getlist("ids")][:MAX_FORM_IDS],
            "rcpt": [str(v) for v in form.getlist("rcpt")][:1000], "action": str(form.get("action", "")),
            "on": str(form.get("on", "")), "text": str(form.get("text", ""))[:4000]}


def csrf_failed(request: Request, auth: Auth) -> Response:
    return page(request, "error.html", auth, 403, message="The form expired or did not come from this site "
                                                         "(CSRF check failed). Reload the page and try again.")


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
        keys = (f"ip:{client}", f"user:{name.lower()}")
        if not c.auth.login_form_ok(request, form.get("csrf")):
            error, status = "The login form expired; please try again.", 403
        elif c.auth.throttle.blocked(*keys):
            await c.store.audit(name or "-", "login-throttled", None, "", {"client": client})
            error, status = "Too many failed logins; wait a few minutes and try again.", 429
        else:
            user = await c.store.get_user(name) if accounts.NAME.match(name) else None
            if await asyncio.to_thread(accounts.verify_password, user, str(form.get("password", ""))[:1024]):
                c.auth.throttle.clear(f"user:{name.lower()}")
                await c.store.audit(name, "login", None, "", {"client": client})
                response = RedirectResponse(nxt, status_code=303)
                c.auth.login(response, name)
                response.delete_cookie(LOGIN_COOKIE, path="/")
                return response
            c.auth.throttle.fail(*keys)
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
    await ctx(request).store.audit(auth.user.name, "logout")
    response = RedirectResponse("/login", status_code=303)
    ctx(request).auth.logout(response)
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
    return page(request, "queue.html", auth, items=result.items, total=result.total, query=query, params=params,
                held_now=held_now, requested=requested,
                error=error, counts=await c.store.counts(), oldest=(time.time() - oldest) if oldest else None,
                statuses=STATUSES, sort_links=sort_links, link=link,
                prev=link(offset=max(0, query.offset - query.limit)) if query.offset else None,
                next=link(offset=query.offset + query.limit) if query.offset + query.limit < result.total else None)


async def bulk(request: Request) -> Response:
    auth = await user_of(request)
    if auth is None:
        return login_needed(request)
    form = await form_of(request, auth)
    if form is None:
        return csrf_failed(request, auth)
    service = ctx(request).service
    if form["action"] not in ("release", "delete") or not form["ids"]:
        return back(request, "/", False, "Choose messages and an action.")
    done, failed = [], []
    for item_id in form["ids"]:
        try:
            if form["action"] == "release":
                outcome = await service.release(item_id, auth.user, form["reason"])
            else:
                outcome = await service.delete(item_id, auth.user, form["reason"])
            (done if outcome.status in ("released", "partly-released", "approved", "deleted") else failed).append(
                f"{item_id}: {outcome.message}")
        except Refused as e:
            failed.append(f"{item_id}: {e}")
    verb = "released" if form["action"] == "release" else "deleted"
    message = f"{len(done)} {verb}" + (f"; {len(failed)} not: " + "; ".join(failed[:5]) if failed else "")
    return back(request, "/", not failed, message)


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
    from gateway import images, mime

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
            outcome = await service.release(item_id, auth.user, form["reason"], form["rcpt"] or None)
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


async def audit_page(request: Request) -> Response:
    auth = await user_of(request)
    if auth is None:
        return login_needed(request)
    if auth.user.role != "admin":
        return page(request, "error.html", auth, 403, message="Only an admin can read the whole audit log.")
    return page(request, "audit.html", auth, entries=await ctx(request).store.audit_log(limit=500))


# --- the app --------------------------------------------------------------------------------------

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
                for key, value in (("Content-Security-Policy", PAGE_CSP), ("X-Frame-Options", "DENY"),
                                   ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                                   ("Cache-Control", "no-store"), ("Cross-Origin-Opener-Policy", "same-origin")):
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


def create_app(settings: Settings, gateway=None) -> Starlette:
    """The review app; with `gateway` it uses that running gateway's store, pipeline and actions,
    without one it starts its own (for `gateway review` and the tests) in the lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        own = None
        gw = gateway
        if gw is None:
            from gateway.app import Gateway
            gw = own = await Gateway.create(settings)
        secret = settings.review.secret_key or await gw.store.secret("review-cookie-key")
        templates = Jinja2Templates(directory=str(HERE / "templates"))
        templates.env.globals["Markup"] = Markup
        templates.env.tests["picture_part"] = render.is_picture_part
        from gateway.notify.notifier import link_secret
        app.state.ctx = Ctx(settings, gw, gw.release_service(), Authenticator(settings.review, gw.store, secret),
                            templates, await link_secret(settings, gw.store))
        try:
            yield
        finally:
            if own is not None:
                await own.close()

    app = Starlette(routes=routes(), lifespan=lifespan)
    app.add_middleware(SecurityHeaders)
    return app
