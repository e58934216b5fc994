"""Who is asking: signed session cookies, CSRF tokens, bearer tokens, login throttling, and the
optional trusted reverse-proxy header for single sign-on.

The session cookie is signed (itsdangerous) and carries the user name, a CSRF token and the login
time; it is HttpOnly, SameSite=Strict, Secure when configured, and expires after
`[review] session_minutes`. Every request re-reads the user, so a removed or disabled account stops
at once. Logins are throttled per client address and per name.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from gateway import accounts
from gateway.config import ReviewSettings
from gateway.quarantine import Store, User

SESSION_COOKIE = "gw_session"
LOGIN_COOKIE = "gw_login"        # the CSRF token of the login form, before there is a session
FLASH_COOKIE = "gw_flash"


@dataclass(frozen=True)
class Auth:
    user: User
    csrf: str                    # "" for bearer tokens (no cookies, so no CSRF)
    via: str                     # session | token | proxy


class Throttle:
    """At most `attempts` failures per key within `window` seconds."""

    def __init__(self, attempts: int, window: float) -> None:
        self.attempts, self.window = attempts, window
        self.failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str) -> deque[float]:
        q = self.failures[key]
        cutoff = time.monotonic() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def blocked(self, *keys: str) -> bool:
        return any(len(self._recent(k)) >= self.attempts for k in keys)

    def fail(self, *keys: str) -> None:
        for k in keys:
            self._recent(k).append(time.monotonic())
        if len(self.failures) > 10000:          # bounded memory under a spray of names
            for k in [k for k, q in self.failures.items() if not q][:5000]:
                del self.failures[k]

    def clear(self, *keys: str) -> None:
        for k in keys:
            self.failures.pop(k, None)


class Authenticator:
    def __init__(self, settings: ReviewSettings, store: Store, secret: str) -> None:
        self.settings = settings
        self.store = store
        self.sessions = URLSafeTimedSerializer(secret, salt="gateway-review-session")
        self.login_forms = URLSafeTimedSerializer(secret, salt="gateway-review-login")
        self.flashes = URLSafeTimedSerializer(secret, salt="gateway-review-flash")
        self.throttle = Throttle(settings.login_attempts, settings.login_window_seconds)
        self.proxies = tuple(ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies)

    # --- sessions ---

    def session_value(self, name: str) -> tuple[str, str]:
        csrf = secrets.token_urlsafe(32)
        return self.sessions.dumps({"u": name, "c": csrf, "t": time.time()}), csrf

    def set_cookie(self, response: Response, key: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(key, value, max_age=max_age, httponly=True, samesite="strict",
                            secure=self.settings.secure_cookies, path="/")

    def login(self, response: Response, name: str) -> None:
        value, _ = self.session_value(name)
        self.set_cookie(response, SESSION_COOKIE, value, self.settings.session_minutes * 60)

    def logout(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")

    async def from_session(self, request: Request) -> Auth | None:
        value = request.cookies.get(SESSION_COOKIE)
        if not value or len(value) > 4096:
            return None
        try:
            data = self.sessions.loads(value, max_age=self.settings.session_minutes * 60)
        except BadSignature:
            return None
        user = await self.store.get_user(str(data.get("u", "")))
        if user is None or user.disabled:
            return None
        return Auth(user, str(data.get("c", "")), "session")

    async def from_bearer(self, request: Request) -> Auth | bool | None:
        """An Auth, None without an Authorization header, False for a bad token."""
        header = request.headers.get("authorization", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        user = await accounts.user_for_token(self.store, token.strip())
        return Auth(user, "", "token") if user else False

    def trusted_proxy(self, request: Request) -> bool:
        if not self.settings.trusted_header or request.client is None:
            return False
        try:
            address = ipaddress.ip_address(request.client.host)
        except ValueError:
            return False
        return any(address in n for n in self.proxies)

    async def from_proxy(self, request: Request) -> User | None:
        if not self.trusted_proxy(request):
            return None
        name = request.headers.get(self.settings.trusted_header, "").strip()
        user = await self.store.get_user(name) if name else None
        return user if user and not user.disabled else None

    # --- CSRF ---

    @staticmethod
    def csrf_ok(expected: str, given: str | None) -> bool:
        return bool(expected) and bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())

    def login_form_token(self, request: Request) -> tuple[str, str | None]:
        """The login form's CSRF token and, when new, the cookie value to set."""
        value = request.cookies.get(LOGIN_COOKIE, "")
        try:
            return str(self.login_forms.loads(value, max_age=3600)), None
        except BadSignature:
            token = secrets.token_urlsafe(32)
            return token, self.login_forms.dumps(token)

    def login_form_ok(self, request: Request, given: str | None) -> bool:
        try:
            expected = str(self.login_forms.loads(request.cookies.get(LOGIN_COOKIE, ""), max_age=3600))
        except BadSignature:
            return False
        return self.csrf_ok(expected, given)

    # --- flash messages (one-shot, signed, so a link cannot put words in our mouth) ---

    def flash(self, response: Response, ok: bool, message: str) -> None:
        self.set_cookie(response, FLASH_COOKIE, self.flashes.dumps({"ok": ok, "m": message[:500]}), 60)

    def read_flash(self, request: Request) -> dict | None:
        value = request.cookies.get(FLASH_COOKIE)
        if not value:
            return None
        try:
            return self.flashes.loads(value, max_age=60)
        except BadSignature:
            return None
