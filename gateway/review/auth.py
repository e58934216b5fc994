"""Who is asking: signed session cookies, CSRF tokens, bearer tokens, login throttling, the client
address behind a reverse proxy, and the optional trusted proxy header for single sign-on.

The session cookie is signed (itsdangerous) and carries the user name, the account's session epoch,
a CSRF token and the login time; it is HttpOnly, SameSite=Strict, Secure when configured, and
expires after `[review] session_minutes`. Every request re-reads the user and compares the epoch, so
a removed or disabled account stops at once, and logout or a password change (which replace the
epoch) end every session of that account. A per-account epoch rather than a table of sessions: the
user row is read on every request anyway, so the check costs nothing, there is nothing to expire or
clean up, and every node sharing the store sees the change at once.

Logins are throttled per (client, account) and per account across all clients, never per client
alone: failures on one account never block another, however many people share an address.
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


# Guessing one account from many addresses: the account's own budget is this many times the per-address one.
ACCOUNT_FACTOR = 10
MAX_KEYS = 20000


class Throttle:
    """Login failures per (client, account) and per account within `window` seconds: at most `attempts`
    from one client for one account, and ACCOUNT_FACTOR times that for the account from all clients."""

    def __init__(self, attempts: int, window: float) -> None:
        self.attempts, self.window = attempts, window
        self.failures: dict[str, deque[float]] = defaultdict(deque)

    @staticmethod
    def keys(client: str, name: str) -> tuple[str, str]:
        account = name.strip().lower()
        return f"client:{client}|user:{account}", f"user:{account}"

    def _recent(self, key: str) -> int:
        """The failures of `key` within the window (older ones are dropped; no entry is made)."""
        q = self.failures.get(key)
        cutoff = time.monotonic() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return len(q) if q else 0

    def blocked(self, client: str, name: str) -> bool:
        pair, account = self.keys(client, name)
        return self._recent(pair) >= self.attempts or self._recent(account) >= self.attempts * ACCOUNT_FACTOR

    def fail(self, client: str, name: str) -> None:
        for key in self.keys(client, name):
            self._recent(key)
            self.failures[key].append(time.monotonic())
        if len(self.failures) > MAX_KEYS:          # bounded memory under a spray of names and addresses
            for key in list(self.failures):
                if not self._recent(key):
                    del self.failures[key]
            if len(self.failures) > MAX_KEYS // 2:       # keep the keys closest to their limit
                keep = sorted(self.failures, key=lambda k: (len(self.failures[k]), self.failures[k][-1]))
                for key in keep[:len(keep) - MAX_KEYS // 2]:
                    del self.failures[key]

    def succeeded(self, client: str, name: str) -> None:
        """The right password from this client: its failures for this account are forgotten (not the
        account's total, which a guesser elsewhere would otherwise see reset)."""
        self.failures.pop(self.keys(client, name)[0], None)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """'192.0.2.1', '192.0.2.1:5000', '2001:db8::1' or '[2001:db8::1]:5000' -> the address; else None."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_bucket(client: str) -> str:
    """The throttle's name for a client: the address, or its /64 for IPv6 (one host holds a whole /64)."""
    address = _address(client)
    if address is None:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


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

    def session_value(self, user: User) -> tuple[str, str]:
        csrf = secrets.token_urlsafe(32)
        return self.sessions.dumps({"u": user.name, "e": user.session_epoch, "c": csrf, "t": time.time()}), csrf

    def set_cookie(self, response: Response, key: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(key, value, max_age=max_age, httponly=True, samesite="strict",
                            secure=self.settings.secure_cookies, path="/")

    def login(self, response: Response, user: User) -> None:
        value, _ = self.session_value(user)
        self.set_cookie(response, SESSION_COOKIE, value, self.settings.session_minutes * 60)

    async def logout(self, response: Response, user: User) -> None:
        """End every session of the account (not only this browser's cookie, which the browser may keep)."""
        await self.store.end_sessions(user.name)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")

    async def from_session(self, request: Request) -> Auth | None:
        value = request.cookies.get(SESSION_COOKIE)
        if not value or len(value) > 4096:
            return None
        try:
            data = self.sessions.loads(value, max_age=self.settings.session_minutes * 60)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        user = await self.store.get_user(str(data.get("u", "")))
        epoch = str(data.get("e", ""))
        if user is None or user.disabled or not user.session_epoch or \
                not hmac.compare_digest(epoch.encode(), user.session_epoch.encode()):
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

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return address is not None and any(address in n for n in self.proxies)

    def trusted_proxy(self, request: Request) -> bool:
        if not self.settings.trusted_header or request.client is None:
            return False
        return self._trusted(_address(request.client.host))

    def client_address(self, request: Request) -> str:
        """Who is at the other end: the TCP peer, or, when the peer is a trusted proxy and
        `[review] client_ip_header` is set, the right-most address in that header that is not itself a
        trusted proxy (the proxy appends what it saw; what the client wrote is further left)."""
        peer = request.client.host if request.client else ""
        header = self.settings.client_ip_header
        if not header or not self._trusted(_address(peer)):
            return peer
        entries = [e for value in request.headers.getlist(header) for e in value.split(",") if e.strip()][-32:]
        found = None
        for entry in reversed(entries):
            address = _address(entry)
            if address is None:
                break                       # past garbage nothing can be trusted
            found = address
            if not self._trusted(address):
                break
        return str(found) if found is not None else peer

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
