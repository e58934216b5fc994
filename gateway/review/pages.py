"""What the review pages share: the per-app context, rendering a page, redirects with a flash
message, the signed-in user, and the checked form (used by gateway/review/app.py and request.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from gateway.config import Settings
from gateway.release import ReleaseService, may
from gateway.review.auth import FLASH_COOKIE, SESSION_COOKIE, Auth, Authenticator

MAX_FORM_IDS = 500


@dataclass
class Ctx:
    """What every page reads: the settings, the release service (and its store), sign-in, templates."""

    settings: Settings
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
    value, csrf = c.auth.session_value(proxied)
    request.state.new_session = value
    await c.store.audit(proxied.name, "login", None, "", {"via": "proxy", "client": client_address(request)})
    return Auth(proxied, csrf, "proxy")


def client_address(request: Request) -> str:
    """The client's address (behind a trusted proxy, as `[review] client_ip_header` gives it)."""
    return ctx(request).auth.client_address(request)


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
            "on": str(form.get("on", "")), "text": str(form.get("text", ""))[:4000],
            "confirm": str(form.get("confirm", ""))[:1000], "step": str(form.get("step", ""))[:20],
            "scope": str(form.get("scope", ""))[:20], "filter": str(form.get("filter", ""))[:4000]}


def csrf_failed(request: Request, auth: Auth) -> Response:
    return page(request, "error.html", auth, 403, message="The form expired or did not come from this site "
                                                         "(CSRF check failed). Reload the page and try again.")
