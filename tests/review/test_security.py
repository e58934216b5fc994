"""The review app against XSS (finding details, evidence, file names, notes), CSRF, session fixation, path
traversal, authentication bypass on every route, and SQL injection in every filter, through TestClient."""

from __future__ import annotations

import dataclasses
import json
import warnings
from urllib.parse import quote

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from gateway.model import Finding
from gateway.quarantine import findings_json
from tests.support.quarantine_fixtures import held_item
from tests.support.review_fixtures import csrf_of, login, make_site, review_app

XSS = '<script>alert(1)</script>'
ATTR = '"><img src=x onerror=alert(2)>'
SVG = "<svg/onload=alert(3)>"
PAYLOADS = (XSS, ATTR, SVG)


def hostile_item():
    raw = ("From: eve@evil.example\r\nTo: carol@example.gov\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
           f"--BB\r\nContent-Type: application/octet-stream; name=\"{SVG}.exe\"\r\n"
           f"Content-Disposition: attachment; filename=\"{SVG}.exe\"\r\n\r\nMZ\r\n--BB--\r\n").encode()
    item = held_item(subject="hostile findings", raw=raw, kinds=(), sender="eve@evil.example",
                     rcpts=("carol@example.gov",), direction="inbound")
    findings = (Finding(kind="dangerous_file.executable", detector="filetype", detail=f"Executable {XSS} attached",
                        part=f"part 2: {SVG}.exe", evidence=(ATTR, f"name {XSS}")),)
    return dataclasses.replace(item, findings=findings)


@pytest.fixture
def site(tmp_path, thread_sink):
    return make_site(tmp_path, thread_sink, {
        "pii": held_item(subject="Payroll", kinds=("pii.ssn",)),
        "virus": held_item(subject="Invoice", kinds=("virus",), rule="inbound/malware", direction="inbound"),
        "hostile": hostile_item(),
    })


@pytest.fixture
def client(site):
    with TestClient(review_app(site.settings), follow_redirects=False) as c:
        yield c


def bearer(site, name):
    return {"Authorization": f"Bearer {site.tokens[name]}"}


def follow_login(client, name):
    r = login(client, name)
    assert r.status_code == 303, r.text
    return r


# --- XSS ----------------------------------------------------------------------------------------------------

def test_finding_details_evidence_file_names_and_notes_are_escaped(client, site):
    follow_login(client, "ada")
    item = site.items["hostile"]
    page = client.get(f"/held/{item.id}")
    csrf = csrf_of(page.text)
    r = client.post(f"/held/{item.id}/note", data={"csrf": csrf, "text": f"note {XSS} {ATTR}"})
    assert r.status_code == 303
    pages = [client.get(url).text for url in (f"/held/{item.id}", "/", "/audit", "/dashboard", "/?q=" + quote(XSS))]
    for html in pages:
        for payload in PAYLOADS:
            assert payload not in html, payload
    detail = pages[0]
    assert "Executable &lt;script&gt;alert(1)&lt;/script&gt; attached" in detail       # detail, escaped
    assert "&lt;svg/onload=alert(3)&gt;.exe" in detail                                 # the file name
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in detail                    # the evidence
    assert "note &lt;script&gt;alert(1)&lt;/script&gt;" in detail                      # the note
    api = client.get(f"/api/held/{item.id}", headers=bearer(site, "ada"))
    assert api.headers["content-type"].startswith("application/json")


# --- CSRF ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "", "wrong", "A" * 43])
def test_every_state_changing_post_needs_the_right_csrf_token(client, site, token):
    follow_login(client, "ada")
    item = site.items["pii"]
    data = {"reason": "fp", "text": "n", "on": "1", "ids": [item.id], "action": "delete"}
    if token is not None:
        data["csrf"] = token
    for url in (f"/held/{item.id}/release", f"/held/{item.id}/delete", f"/held/{item.id}/note",
                f"/held/{item.id}/legal-hold", "/bulk", "/logout"):
        r = client.post(url, data=data)
        assert r.status_code == 403, url
    assert client.post(f"/api/held/{item.id}/delete", json={"reason": "x"},
                       headers={"X-CSRF-Token": token or ""}).status_code == 403
    stored = site.run(lambda s: s.get(item.id))
    assert stored.status == "held" and not stored.legal_hold and site.sink.messages == []
    assert client.get("/").status_code == 200                   # still logged in: logout was refused too
    notes = [e for e in site.run(lambda s: s.audit_log(held_id=item.id)) if e.action == "note"]
    assert notes == []


def test_another_users_csrf_token_does_not_work(client, site):
    other = TestClient(review_app(site.settings), follow_redirects=False)
    with other:
        follow_login(other, "rolf")
        rolf_csrf = csrf_of(other.get("/").text)
    follow_login(client, "rita")
    item = site.items["pii"]
    assert client.post(f"/held/{item.id}/delete", data={"csrf": rolf_csrf, "reason": "x"}).status_code == 403
    assert site.run(lambda s: s.get(item.id)).status == "held"


# --- session fixation ---------------------------------------------------------------------------------------

def test_a_session_cookie_set_before_login_does_not_survive_login(client, site):
    # An attacker's own valid session, planted in the victim's browser, and a made-up value.
    attacker = TestClient(review_app(site.settings), follow_redirects=False)
    with attacker:
        follow_login(attacker, "rolf")
        planted = attacker.cookies.get("gw_session")
    for value in (planted, "fixed-session-id"):
        client.cookies.clear()
        client.cookies.set("gw_session", value)
        r = follow_login(client, "rita")
        new = next(h for h in r.headers.get_list("set-cookie") if h.startswith("gw_session="))
        new_value = new.split("=", 1)[1].split(";", 1)[0]
        assert new_value and new_value != value
        client.cookies.clear()
        client.cookies.set("gw_session", new_value)
        page = client.get("/")
        assert page.status_code == 200 and "rita" in page.text and "rolf" not in page.text.split("Quarantine")[0]
    # The login form's own token is not a session: it grants nothing.
    client.cookies.clear()
    client.get("/login")
    assert client.get("/", follow_redirects=False).status_code == 303


# --- path traversal -----------------------------------------------------------------------------------------

TRAVERSALS = ["/held/../../etc/passwd", "/held/..%2f..%2fetc%2fpasswd", "/held/%2e%2e%2f%2e%2e%2fetc%2fpasswd/raw",
              "/held/....//....//etc/passwd/preview", "/static/../app.py", "/static/..%2fapp.py",
              "/static/%2e%2e/auth.py", "/static/%2e%2e%2f%2e%2e%2fconfig.py", "/static/..\\app.py",
              "/api/held/..%2f..%2fetc%2fpasswd", "/api/held/%2e%2e", "/held/%00/raw", "/static//etc/passwd",
              "/static/%252e%252e/app.py"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_reaches_no_file(client, site, path):
    follow_login(client, "ada")
    r = client.get(path, follow_redirects=True)
    assert r.status_code in (200, 400, 401, 403, 404), r.status_code
    text = r.text
    for leak in ("root:x:0:0", "import ", "def ", "SECRET", "[smtp]"):
        assert leak not in text, (path, leak)
    r = client.get(path, headers=bearer(site, "ada"))
    assert "root:x:0:0" not in r.text and "import " not in r.text


# --- authentication bypass ----------------------------------------------------------------------------------

def routes_for(item_id):
    get_pages = ["/", "/dashboard", "/audit", f"/held/{item_id}", f"/held/{item_id}/raw", f"/held/{item_id}?rescan=1"]
    post_pages = ["/logout", "/bulk"] + [f"/held/{item_id}/{a}" for a in ("release", "delete", "note", "legal-hold")]
    api_get = ["/api/held", f"/api/held/{item_id}", "/api/held?status=held"]
    api_post = [f"/api/held/{item_id}/release", f"/api/held/{item_id}/delete"]
    return get_pages, post_pages, api_get, api_post


@pytest.mark.parametrize("credentials", [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic YWRhOmFkYQ=="},
                                         {"Authorization": "Bearer gw_forged_token"},
                                         {"Cookie": "gw_session=forged"}, {"X-Remote-User": "ada"}])
def test_every_route_refuses_a_request_without_valid_credentials(client, site, credentials):
    item = site.items["virus"]
    get_pages, post_pages, api_get, api_post = routes_for(item.id)
    for url in get_pages:
        r = client.get(url, headers=credentials)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), url
    assert client.get(f"/held/{item.id}/preview", headers=credentials).status_code == 401
    for url in post_pages:
        r = client.post(url, data={"csrf": "x", "reason": "r", "ids": [item.id], "action": "release"},
                        headers=credentials)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), url
    for url in api_get:
        r = client.get(url, headers=credentials)
        assert r.status_code == 401 and "Payroll" not in r.text, url
    for url in api_post:
        assert client.post(url, json={"reason": "r"}, headers=credentials).status_code == 401, url
    assert site.run(lambda s: s.get(item.id)).status == "held" and site.sink.messages == []
    audit = [e.action for e in site.run(lambda s: s.audit_log())]
    assert not any(a in audit for a in ("view", "release", "delete", "download"))


def test_a_reviewer_gets_403_on_admin_endpoints(client, site):
    virus = site.items["virus"]
    rita = bearer(site, "rita")
    r = client.post(f"/api/held/{virus.id}/release", json={"reason": "fp"}, headers=rita)
    assert r.status_code == 403
    follow_login(client, "rita")
    assert client.get("/audit").status_code == 403
    assert client.get(f"/held/{virus.id}/raw").status_code == 403
    csrf = csrf_of(client.get(f"/held/{virus.id}").text)
    r = client.post(f"/held/{virus.id}/legal-hold", data={"csrf": csrf, "on": "1", "reason": "x"},
                    follow_redirects=True)
    assert "Only an admin" in r.text
    # a bearer token does not open the pages (no cookies, no CSRF): it is for /api/ only
    client.cookies.clear()
    assert client.get("/audit", headers=bearer(site, "ada")).status_code == 303
    assert site.run(lambda s: s.get(virus.id)).status == "held" and not site.run(lambda s: s.get(virus.id)).legal_hold


# --- SQL injection ------------------------------------------------------------------------------------------

SQLI = ["' OR '1'='1", "x' OR 1=1 --", "'; DROP TABLE held; --", "\" OR \"\"=\"", "1; SELECT * FROM users",
        "%", "_", "\\", "' UNION SELECT name, password_hash FROM users --", "ada'--", "\x00", "1e309",
        "99999999999999999999999", "-1", "held' OR status='deleted"]
FILTERS = ["status", "direction", "category", "rule", "sender", "recipient", "since", "until", "subject", "q",
           "sort", "order", "offset", "limit"]


@pytest.mark.parametrize("param", FILTERS)
def test_sql_injection_in_every_filter_is_inert(client, site, param):
    follow_login(client, "ada")
    ada = bearer(site, "ada")
    everything = client.get("/api/held", params={"limit": "100"}, headers=ada).json()["total"]
    for payload in SQLI:
        page = client.get("/", params={param: payload})
        assert page.status_code in (200, 400), (param, payload)      # 400: refused as a bad filter
        for leak in ("Traceback", "OperationalError", "syntax error", "$argon2", "IntegrityError"):
            assert leak not in page.text, (param, payload, leak)       # no error, no password hash
        api = client.get("/api/held", params={param: payload}, headers=ada)
        assert api.status_code in (200, 400), (param, payload, api.status_code)
        if api.status_code == 200:
            body = api.json()
            assert body["total"] <= everything
            assert "$argon2" not in api.text
            if payload == "\x00":
                assert body["total"] == everything              # a control character is no filter at all
            elif param == "q":      # the search box also reads the findings: matched literally, as stored
                literal = [i for i in site.items.values() if payload.lower() in " ".join(
                    (i.mail_from, json.dumps(list(i.rcpt_tos)), i.subject, findings_json(i.findings))).lower()]
                assert body["total"] == len(literal), (param, payload, body["total"])
            elif param in ("sender", "recipient", "subject", "rule", "category", "direction"):
                assert body["total"] == 0, (param, payload, body["total"])     # matched literally: nothing
        else:
            assert "error" in api.json() and "Traceback" not in api.text
    # The tables are all still there and hold the same.
    assert client.get("/api/held", params={"limit": "100"}, headers=ada).json()["total"] == everything
    assert site.run(lambda s: s.get_user("ada")) is not None


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sql_injection_payloads_through_both_store_backends(tmp_path, backend):
    """The same filters straight into the store, on SQLite and the real PostgreSQL (where a NUL in a text
    parameter raises CharacterNotInRepertoireError: the filter drops control characters)."""
    import contextlib

    from gateway.quarantine import Query
    from tests.support.quarantine_fixtures import opened, store_url

    async with contextlib.AsyncExitStack() as stack:
        store = await opened(await store_url(backend, tmp_path, stack))
        stack.push_async_callback(store.close)
        for item in (held_item(subject="Payroll"), held_item(subject="Invoice", kinds=("virus",))):
            await store.hold(item)
        for param in FILTERS:
            for payload in SQLI:
                try:
                    query = Query.from_params({param: payload})
                except ValueError:
                    continue                                   # refused as a bad filter (400 / a message)
                page = await store.query(query)
                if payload == "\x00" or param in ("sort", "order", "status", "since", "until", "limit"):
                    assert page.total <= 2
                elif param == "offset":
                    assert page.total == 2
                else:
                    assert page.total == 0, (param, payload)
        assert (await store.query(Query())).total == 2
