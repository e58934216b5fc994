"""Sessions and accounts of the review app: logout and a password change end the account's sessions;
`gateway users disable|enable|remove|passwd` act at once on cookies and API tokens; on SQLite and
the real PostgreSQL, through the app (TestClient) and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from gateway import accounts, cli, config
from tests.support.peers import free_port
from tests.support.quarantine_fixtures import PgDatabase, held_item, opened, store_url
from tests.support.review_fixtures import PASSWORDS, ROLES, Site, ThreadSink, csrf_of, login, review_app

NEW_PASSWORD = "a-brand-new-password"


@pytest.fixture
def sink():
    s = ThreadSink().start()
    yield s
    s.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def site(request, tmp_path, sink):
    """The review site of tests/support/review_fixtures.py, on either backend, with a config file for the CLI."""
    db = PgDatabase() if request.param == "postgres" else None
    url = asyncio.run(db.__aenter__()) if db else f"sqlite:///{tmp_path / 'review.db'}"
    settings = config.from_dict({
        "quarantine": {"url": url}, "relay": {"next_hop": f"127.0.0.1:{sink.port}", "timeout": 5.0},
        "domains": {"local": ["example.gov"]}, "networks": {"internal": ["127.0.0.1/32"]},
        "review": {"listen": f"127.0.0.1:{free_port()}", "secret_key": "test-secret-key-0123456789"},
    }, source="<test>")
    site = Site(settings, url, sink, {"pii": held_item(subject="Payroll", kinds=("pii.ssn",))})

    async def prepare(store):
        for name, password in PASSWORDS.items():
            await accounts.add_user(store, name, ROLES[name], password)
            site.tokens[name] = await accounts.new_token(store, name)
        for item in site.items.values():
            await store.hold(item)
    site.run(prepare)
    path = tmp_path / "gateway.toml"
    path.write_text(f'[quarantine]\nurl = "{url}"\n[relay]\nnext_hop = "127.0.0.1:{sink.port}"\n'
                    '[domains]\nlocal = ["example.gov"]\n')
    site.config = str(path)
    yield site
    if db:
        asyncio.run(db.__aexit__(None, None, None))


@pytest.fixture
def app(site):
    with TestClient(review_app(site.settings), follow_redirects=False) as c:
        yield c


def browser(app: TestClient, name: str) -> dict[str, str]:
    """Log `name` in on a fresh cookie jar; returns the session cookie and its CSRF token."""
    app.cookies.clear()
    r = login(app, name)
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    cookie = app.cookies.get("gw_session")
    page = app.get("/")
    assert page.status_code == 200
    return {"cookie": cookie, "csrf": csrf_of(page.text)}


def with_cookie(app: TestClient, session: dict[str, str]) -> TestClient:
    app.cookies.clear()
    app.cookies.set("gw_session", session["cookie"])
    return app


def assert_session_works(app: TestClient, session: dict[str, str], name: str) -> None:
    r = with_cookie(app, session).get("/")
    assert r.status_code == 200 and f"{name} (" in r.text


def assert_session_dead(app: TestClient, site: Site, session: dict[str, str]) -> None:
    """Pages redirect to the login, the API answers 401, and a POST with the session's CSRF token is refused."""
    item = site.items["pii"]
    r = with_cookie(app, session).get("/")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert with_cookie(app, session).get(f"/held/{item.id}").status_code == 303
    assert with_cookie(app, session).get(f"/held/{item.id}/preview").status_code == 401
    assert with_cookie(app, session).get("/api/held").status_code == 401
    r = with_cookie(app, session).post(f"/held/{item.id}/delete", data={"csrf": session["csrf"], "reason": "gone"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    r = with_cookie(app, session).post(f"/api/held/{item.id}/delete", json={"reason": "gone"},
                                       headers={"X-CSRF-Token": session["csrf"]})
    assert r.status_code == 401
    assert site.run(lambda s: s.get(item.id, with_raw=False)).status == "held"


def run_cli(capsys, site: Site, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    old = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = cli.main([*argv, "--config", site.config])
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return code, out, err


def api(app: TestClient, site: Site, name: str):
    app.cookies.clear()
    return app.get("/api/held", headers={"Authorization": f"Bearer {site.tokens[name]}"})


def audit_actions(site: Site) -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.reason) for e in site.run(lambda s: s.audit_log())]


# --- logout -----------------------------------------------------------------------------------------------

def test_a_cookie_kept_after_logout_is_refused_and_so_is_its_csrf_post(app, site):
    session = browser(app, "rita")
    r = with_cookie(app, session).post("/logout", data={"csrf": session["csrf"]})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert_session_dead(app, site, session)
    # Logging in again gives a working session.
    assert_session_works(app, browser(app, "rita"), "rita")


def test_logout_ends_every_session_of_that_account_and_no_other(app, site):
    desk, laptop, other = browser(app, "rita"), browser(app, "rita"), browser(app, "rolf")
    assert with_cookie(app, desk).post("/logout", data={"csrf": desk["csrf"]}).status_code == 303
    assert_session_dead(app, site, laptop)
    assert_session_works(app, other, "rolf")
    assert api(app, site, "rita").status_code == 200         # API tokens are not sessions


# --- passwd -----------------------------------------------------------------------------------------------

def test_passwd_ends_old_sessions_and_only_the_new_password_logs_in(app, site, capsys):
    session, other = browser(app, "rita"), browser(app, "rolf")
    code, out, err = run_cli(capsys, site, "users", "passwd", "rita", stdin=NEW_PASSWORD + "\n")
    assert code == 0 and "rita" in out and "sessions" in out, (out, err)
    assert_session_dead(app, site, session)
    assert_session_works(app, other, "rolf")
    app.cookies.clear()
    assert login(app, "rita").status_code == 401                       # the old password
    app.cookies.clear()
    assert login(app, "rita", NEW_PASSWORD).status_code == 303
    assert ("gateway users (cli)", "user-passwd", "rita") in audit_actions(site)


def test_passwd_refuses_a_short_password_an_unknown_name_and_changes_nothing(app, site, capsys):
    session = browser(app, "rita")
    code, _, err = run_cli(capsys, site, "users", "passwd", "rita", stdin="short\n")
    assert code == 1 and "10 characters" in err
    code, _, err = run_cli(capsys, site, "users", "passwd", "nobody", stdin=NEW_PASSWORD + "\n")
    assert code == 1 and "no user 'nobody'" in err
    assert_session_works(app, session, "rita")
    app.cookies.clear()
    assert login(app, "rita").status_code == 303


# --- disable, enable, remove ------------------------------------------------------------------------------

def test_disable_stops_cookies_and_tokens_at_once_and_enable_restores_login(app, site, capsys):
    session = browser(app, "rita")
    assert api(app, site, "rita").status_code == 200
    code, out, _ = run_cli(capsys, site, "users", "disable", "rita")
    assert code == 0 and "disabled rita" in out
    assert_session_dead(app, site, session)
    assert api(app, site, "rita").status_code == 401
    app.cookies.clear()
    assert login(app, "rita").status_code == 401                       # the right password, but disabled
    assert api(app, site, "rolf").status_code == 200                   # nobody else is affected
    code, out, _ = run_cli(capsys, site, "users", "disable", "rita")
    assert code == 0 and "already disabled" in out
    code, out, _ = run_cli(capsys, site, "users", "list")
    assert "rita  reviewer  (disabled)" in out

    code, out, _ = run_cli(capsys, site, "users", "enable", "rita")
    assert code == 0 and "enabled rita" in out
    assert_session_dead(app, site, session)                            # the old session stays ended
    assert api(app, site, "rita").status_code == 200                   # a suspension, not a revocation
    assert_session_works(app, browser(app, "rita"), "rita")
    actions = audit_actions(site)
    assert ("gateway users (cli)", "user-disable", "rita") in actions
    assert ("gateway users (cli)", "user-enable", "rita") in actions


def test_remove_stops_cookies_and_tokens_and_a_new_account_of_that_name_inherits_nothing(app, site, capsys):
    session = browser(app, "rita")
    code, out, _ = run_cli(capsys, site, "users", "remove", "rita")
    assert code == 0 and "removed rita" in out
    assert_session_dead(app, site, session)
    assert api(app, site, "rita").status_code == 401
    assert site.run(lambda s: s.get_user("rita")) is None
    assert site.run(lambda s: s.tokens("rita")) == []
    code, _, err = run_cli(capsys, site, "users", "remove", "rita")
    assert code == 1 and "no user 'rita'" in err
    # The name is free again; the old cookie and token do not work for the new account.
    code, out, _ = run_cli(capsys, site, "users", "add", "rita", "--role", "admin", stdin=NEW_PASSWORD + "\n")
    assert code == 0
    assert_session_dead(app, site, session)
    assert api(app, site, "rita").status_code == 401
    app.cookies.clear()
    assert login(app, "rita", NEW_PASSWORD).status_code == 303
    assert ("gateway users (cli)", "user-remove", "rita") in audit_actions(site)


def test_account_commands_on_unknown_names_and_users_add_on_an_existing_name(site, capsys):
    for action in ("disable", "enable", "remove"):
        code, out, err = run_cli(capsys, site, "users", action, "nobody")
        assert code == 1 and "no user 'nobody'" in err and out == "", action
    code, _, err = run_cli(capsys, site, "users", "add", "rita", "--role", "reviewer", stdin=NEW_PASSWORD + "\n")
    assert code == 1 and "cannot add user 'rita'" in err and "users passwd rita" in err
    with pytest.raises(SystemExit):
        run_cli(capsys, site, "users", "disable")
    capsys.readouterr()


# --- the session check survives the proxy path too --------------------------------------------------------

def test_a_proxy_login_session_ends_when_the_account_is_disabled(tmp_path, sink, capsys):
    url = f"sqlite:///{tmp_path / 'review.db'}"
    settings = config.from_dict({
        "quarantine": {"url": url}, "relay": {"next_hop": f"127.0.0.1:{sink.port}"},
        "review": {"secret_key": "k" * 32, "trusted_header": "X-Remote-User"}}, source="<test>")
    site = Site(settings, url, sink)
    site.run(lambda s: accounts.add_user(s, "rita", "reviewer", PASSWORDS["rita"]))
    with TestClient(review_app(settings), client=("127.0.0.1", 5000), follow_redirects=False) as c:
        r = c.get("/", headers={"X-Remote-User": "rita"})
        assert r.status_code == 200
        cookie = c.cookies.get("gw_session")
        assert cookie
        site.run(lambda s: accounts.disable(s, "rita"))
        c.cookies.clear()
        c.cookies.set("gw_session", cookie)
        assert c.get("/").status_code == 303                                   # the cookie alone
        assert c.get("/", headers={"X-Remote-User": "rita"}).status_code == 303  # the proxy vouches in vain


# --- the store, both backends -----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_store_account_changes_on_both_backends(tmp_path, backend):
    async with contextlib.AsyncExitStack() as stack:
        store = await opened(await store_url(backend, tmp_path, stack))
        stack.push_async_callback(store.close)
        await accounts.add_user(store, "nina", "reviewer", PASSWORDS["rita"])
        first = (await store.get_user("nina")).session_epoch
        assert first
        await accounts.new_token(store, "nina")
        await store.end_sessions("nina")
        second = (await store.get_user("nina")).session_epoch
        assert second and second != first
        await accounts.change_password(store, "nina", NEW_PASSWORD)
        user = await store.get_user("nina")
        assert user.session_epoch not in (first, second) and accounts.verify_password(user, NEW_PASSWORD)
        assert await store.set_disabled("nina", True) and (await store.get_user("nina")).disabled
        assert await store.set_disabled("nina", False) and not (await store.get_user("nina")).disabled
        assert not await store.set_disabled("nobody", True)
        assert not await store.end_sessions("nobody")
        await store.audit("x", "user-remove", None, "nina")
        assert await store.remove_user("nina")
        assert await store.get_user("nina") is None and await store.tokens("nina") == []
        assert not await store.remove_user("nina")
        assert [e.action for e in await store.audit_log()] == ["user-remove"]      # the audit log keeps its rows


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_an_account_made_before_the_upgrade_gets_a_session_epoch(tmp_path, backend, monkeypatch):
    """A store at schema 3 with an account: after the upgrade the account has an epoch, so its sessions work
    and can be ended; a cookie from before the upgrade carries no epoch and is refused."""
    from gateway.quarantine import postgres, schema, sqlite

    async with contextlib.AsyncExitStack() as stack:
        url = await store_url(backend, tmp_path, stack)
        with monkeypatch.context() as m:
            m.setattr(sqlite, "MIGRATIONS", schema.SQLITE[:3])
            m.setattr(postgres, "MIGRATIONS", schema.POSTGRES[:3])
            old = await opened(url)
            await old._fetch("INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?) "
                             "RETURNING name", "olga", "admin", accounts.hash_password(PASSWORDS["ada"]), 0.0)
            await old.close()
        store = await opened(url)
        stack.push_async_callback(store.close)
        user = await store.get_user("olga")
        assert user.session_epoch and accounts.verify_password(user, PASSWORDS["ada"])
        assert await store.end_sessions("olga")
        assert (await store.get_user("olga")).session_epoch != user.session_epoch


def test_a_cookie_from_before_the_upgrade_has_no_epoch_and_is_refused(app, site):
    from itsdangerous import URLSafeTimedSerializer

    legacy = URLSafeTimedSerializer("test-secret-key-0123456789", salt="gateway-review-session").dumps(
        {"u": "rita", "c": "csrf-token-of-old", "t": 0})
    assert_session_dead(app, site, {"cookie": legacy, "csrf": "csrf-token-of-old"})



# --- an approval given before the account was disabled or removed no longer counts ------------------------

@pytest.mark.parametrize("action", ["disable", "remove"])
def test_a_pending_approval_of_a_disabled_or_removed_account_no_longer_counts(app, site, capsys, action):
    item = held_item(subject="Two person", kinds=("pii.card",), approvals=2)
    site.run(lambda s: s.hold(item))
    rita, rolf = ({"Authorization": f"Bearer {site.tokens[n]}"} for n in ("rita", "rolf"))
    r = app.post(f"/api/held/{item.id}/release", json={"reason": "fine"}, headers=rita)
    assert r.status_code == 200 and r.json()["status"] == "approved"
    code, _, _ = run_cli(capsys, site, "users", action, "rita")
    assert code == 0
    assert site.run(lambda s: s.approvals(item.id)) == []
    r = app.post(f"/api/held/{item.id}/release", json={"reason": "fine"}, headers=rolf)
    assert r.status_code == 200 and r.json()["status"] == "approved"          # 1 of 2 again, not released
    assert site.sink.messages == []
    assert "approve" in [e.action for e in site.run(lambda s: s.audit_log(held_id=item.id))]   # history stays
