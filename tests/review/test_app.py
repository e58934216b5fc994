"""The review web app and JSON API through Starlette's TestClient: authentication, CSRF, roles,
escaping of attacker-controlled mail, and releases that really reach the (threaded) thread_sink."""

from __future__ import annotations

import time
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from tests.support.quarantine_fixtures import VIRUS, held_item
from tests.support.review_fixtures import csrf_of, login, make_site, review_app

XSS_SUBJECT = '<script>alert("subject")</script>'
XSS_FILE = '"><img src=x onerror=alert(1)>.pdf'
XSS_RAW = (
    f"From: eve@evil.example\r\nTo: carol@example.gov\r\nSubject: {XSS_SUBJECT}\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=BB\r\n\r\n"
    "--BB\r\nContent-Type: text/plain\r\n\r\nHello <script>alert('body')</script> secret SSN 123-45-6789\r\n"
    "--BB\r\nContent-Type: text/html\r\n\r\n<p onclick=\"alert(2)\">Hi<script>alert(3)</script>"
    "<img src=\"http://tracker.example/x.png\"><a href=\"javascript:alert(4)\">x</a>"
    "<style>@font-face{src:url(http://fonts.example/f.woff)}</style></p>\r\n"
    f"--BB\r\nContent-Type: application/pdf; name=\"{XSS_FILE}\"\r\n"
    f"Content-Disposition: attachment; filename=\"{XSS_FILE}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    "R0lGODlhAQABAAAAADs=\r\n--BB--\r\n").encode()


@pytest.fixture
def site(tmp_path, thread_sink):
    return make_site(tmp_path, thread_sink, {
        "pii": held_item(subject="Payroll", kinds=("pii.ssn",)),
        "virus": held_item(subject="Invoice", kinds=("virus",), rule="inbound/malware", direction="inbound"),
        "xss": held_item(subject=XSS_SUBJECT, raw=XSS_RAW, kinds=("pii.ssn",), sender="eve@evil.example",
                         rcpts=("carol@example.gov",), direction="inbound"),
        "two": held_item(subject="Two person", kinds=("pii.card",), approvals=2,
                         rcpts=("bob@example.org", "dan@example.org")),
    })


@pytest.fixture
def client(site):
    with TestClient(review_app(site.settings), follow_redirects=True) as c:
        yield c


def bearer(site, name):
    return {"Authorization": f"Bearer {site.tokens[name]}"}


def test_pages_and_api_need_credentials(client, site):
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.get(f"/held/{site.items['pii'].id}/raw", follow_redirects=False).status_code == 303
    assert client.get("/api/held").status_code == 401
    assert client.get("/api/held", headers={"Authorization": "Bearer gw_nope_x"}).status_code == 401
    assert client.post(f"/api/held/{site.items['pii'].id}/release", json={"reason": "x"}).status_code == 401
    assert client.get("/login").headers["content-security-policy"].startswith("default-src 'none'")


def test_login_failure_is_audited_and_throttled(client, site):
    assert login(client, "rita", "wrong").status_code == 401
    for _ in range(4):
        login(client, "rita", "wrong")
    r = login(client, "rita")          # right password, but too many failures
    assert r.status_code == 429 and "Too many failed logins" in r.text
    actions = site.run(lambda s: s.audit_log())
    assert [e.action for e in actions].count("login-failed") == 5 and actions[0].action == "login-throttled"


def test_login_sets_a_strict_httponly_session_and_logout_ends_it(client, site):
    r = login(client, "rita")
    assert r.status_code == 200 and "Quarantine queue" in r.text
    cookie = next(h for h in r.history[0].headers.get_list("set-cookie") if h.startswith("gw_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    csrf = csrf_of(client.get("/").text)
    assert client.post("/logout", data={"csrf": csrf}).url.path == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303
    assert "login" in [e.action for e in site.run(lambda s: s.audit_log())]


def test_expired_session_is_refused(client, site):
    class Old(TimestampSigner):
        def get_timestamp(self):
            return int(time.time()) - 9 * 3600     # past the 8-hour default session
    stale = URLSafeTimedSerializer("test-secret-key-0123456789", salt="gateway-review-session",
                                   signer=Old).dumps({"u": "ada", "c": "x", "t": 0})
    client.cookies.set("gw_session", stale)
    assert client.get("/", follow_redirects=False).status_code == 303
    forged = URLSafeTimedSerializer("another-key", salt="gateway-review-session").dumps({"u": "ada", "c": "x"})
    client.cookies.set("gw_session", forged)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_post_without_csrf_token_changes_nothing(client, site):
    login(client, "rita")
    item = site.items["pii"]
    r = client.post(f"/held/{item.id}/release", data={"reason": "fp"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post(f"/held/{item.id}/release", data={"reason": "fp", "csrf": "forged"})
    assert r.status_code == 403
    assert client.post(f"/api/held/{item.id}/release", json={"reason": "fp"}).status_code == 403   # session, no header
    assert site.sink.messages == []
    assert site.run(lambda s: s.get(item.id, with_raw=False)).status == "held"
    client.cookies.clear()
    assert client.post("/login", data={"name": "rita", "password": "rita-review-password"}).status_code == 403


def test_queue_filters_counts_and_release_from_the_message_page(client, site):
    login(client, "rita")
    queue = client.get("/")
    assert "Payroll" in queue.text and "Invoice" in queue.text and 'id="oldest"' in queue.text
    filtered = client.get("/", params={"category": "virus"})
    assert "Invoice" in filtered.text and "Payroll" not in filtered.text
    assert "Payroll" not in client.get("/", params={"subject": "invoice"}).text
    assert "Unknown" not in client.get("/", params={"status": "bogus"}).text   # a bad filter is an error, not a crash
    item = site.items["pii"]
    page = client.get(f"/held/{item.id}")
    assert '<mark class="evidence">6789</mark>' in page.text and "pii.ssn" in page.text
    r = client.post(f"/held/{item.id}/release", data={"csrf": csrf_of(page.text), "reason": "test data, not real"})
    assert "Released to bob@example.org" in r.text and 'id="status">released<' in r.text
    [got] = site.sink.messages
    assert got.rcpt_tos == ["bob@example.org"] and b"Subject: Payroll" in got.data
    actions = [e.action for e in site.run(lambda s: s.audit_log(held_id=item.id))]
    assert actions == ["view", "release", "view"]           # newest first: viewed, released, viewed again


def test_reviewer_cannot_do_admin_actions_directly(client, site):
    virus = site.items["virus"]
    r = client.post(f"/api/held/{virus.id}/release", json={"reason": "fp"}, headers=bearer(site, "rita"))
    assert r.status_code == 403 and "admin" in r.json()["error"]
    login(client, "rita")
    page = client.get(f"/held/{virus.id}")
    assert 'id="release-form"' not in page.text and "needs the admin role" in page.text
    r = client.post(f"/held/{virus.id}/release", data={"csrf": csrf_of(page.text), "reason": "fp"})
    assert "needs the admin role" in r.text
    assert client.get(f"/held/{virus.id}/raw").status_code == 403
    r = client.post(f"/held/{virus.id}/legal-hold", data={"csrf": csrf_of(page.text), "on": "1", "reason": "x"})
    assert "Only an admin" in r.text
    assert client.get("/audit").status_code == 403
    assert site.sink.messages == []
    # the admin may, with a reason; the raw download is audited
    r = client.post(f"/api/held/{virus.id}/release", json={"reason": ""}, headers=bearer(site, "ada"))
    assert r.status_code == 422
    r = client.post(f"/api/held/{virus.id}/release", json={"reason": "AV false positive, vendor confirmed"},
                    headers=bearer(site, "ada"))
    assert r.status_code == 422 and "confirm" in r.json()["error"] and site.sink.messages == []
    r = client.post(f"/api/held/{virus.id}/release", json={"reason": "AV false positive, vendor confirmed",
                                                          "confirm": VIRUS}, headers=bearer(site, "ada"))
    assert r.status_code == 200 and r.json()["status"] == "released" and len(site.sink.messages) == 1
    client.cookies.clear()
    login(client, "ada")
    raw = client.get(f"/held/{virus.id}/raw")
    assert raw.status_code == 200 and raw.content == virus.raw
    assert raw.headers["content-disposition"] == f'attachment; filename="{virus.id}.eml"'
    assert "download" in [e.action for e in site.run(lambda s: s.audit_log(held_id=virus.id))]


def test_api_list_show_and_two_person_release(client, site):
    rita, rolf = bearer(site, "rita"), bearer(site, "rolf")
    listed = client.get("/api/held", params={"status": "held", "sort": "subject", "order": "asc"}, headers=rita).json()
    subjects = [i["subject"] for i in listed["items"]]
    assert listed["total"] == 4 and subjects == sorted(i.subject for i in site.items.values())
    assert set(listed["items"][0]) == set(site.items["pii"].summary())
    assert client.get("/api/held", params={"sort": "nope"}, headers=rita).status_code == 400
    two = site.items["two"]
    shown = client.get(f"/api/held/{two.id}", headers=rita).json()
    assert shown["approvals_required"] == 2 and shown["findings"][0]["kind"] == "pii.card"
    first = client.post(f"/api/held/{two.id}/release", json={"reason": "ok"}, headers=rita).json()
    assert first["status"] == "approved" and site.sink.messages == []
    second = client.post(f"/api/held/{two.id}/release", json={"reason": "agreed", "rcpts": ["dan@example.org"]},
                         headers=rolf).json()
    assert second["status"] == "partly-released" and site.sink.messages[0].rcpt_tos == ["dan@example.org"]
    assert client.post(f"/api/held/{two.id}/delete", json={"reason": "rest is spam"}, headers=rita).status_code == 200
    assert client.get(f"/api/held/{two.id}", headers=rita).json()["status"] == "deleted"
    assert client.get("/api/held/nope", headers=rita).status_code == 404
    assert client.post(f"/api/held/{two.id}/delete", content=b"not json", headers=rita).status_code == 400


def test_revoked_token_is_refused(client, site):
    assert client.get("/api/held", headers=bearer(site, "rolf")).status_code == 200
    token_id = site.tokens["rolf"].split("_")[1]
    assert site.run(lambda s: s.revoke_token(token_id))
    assert client.get("/api/held", headers=bearer(site, "rolf")).status_code == 401


def test_attacker_controlled_subject_filename_and_html_are_inert(client, site):
    login(client, "ada")
    item = site.items["xss"]
    for html in (client.get("/").text, client.get(f"/held/{item.id}").text, client.get("/audit").text):
        assert "<script>alert" not in html and "<img src=x" not in html and "onerror=alert(1)>" not in html
    page = client.get(f"/held/{item.id}").text
    assert "&lt;script&gt;alert(&#34;subject&#34;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;.pdf" in page                    # the file name, escaped
    assert "<td>application/pdf</td><td>image/gif</td>" in page                # declared vs true type
    assert '<iframe class="preview" sandbox=""' in page
    preview = client.get(f"/held/{item.id}/preview")
    csp = preview.headers["content-security-policy"]
    assert "sandbox" in csp and "default-src 'none'" in csp and "img-src data:" in csp
    body = preview.text.lower()
    for bad in ("<script", "onclick", "<img", "javascript:", "tracker.example", "fonts.example", "<style"):
        assert bad not in body, bad
    assert "hi" in body


def test_bulk_release_and_delete_need_a_reason_and_report_each(client, site):
    login(client, "rita")
    queue = client.get("/")
    ids = [site.items["pii"].id, site.items["virus"].id]
    r = client.post("/bulk", data={"csrf": csrf_of(queue.text), "ids": ids, "action": "release", "reason": "batch fp"})
    assert "1 released; 1 not" in r.text and "admin" in r.text
    assert len(site.sink.messages) == 1
    r = client.post("/bulk", data={"csrf": csrf_of(r.text), "ids": [site.items["xss"].id], "action": "delete",
                                   "reason": ""})
    assert "reason is required" in r.text
    r = client.post("/bulk", data={"csrf": csrf_of(r.text), "ids": [site.items["xss"].id], "action": "delete",
                                   "reason": "phishing"})
    assert "1 deleted" in r.text


def test_dashboard_shows_chart_rules_and_senders(client, site):
    login(client, "rita")
    page = client.get("/dashboard").text
    assert "<svg" in page and "<script" not in page and "inbound/malware" in page and "eve@evil.example" in page


def test_trusted_proxy_header_is_off_by_default_and_only_from_trusted_addresses(tmp_path, thread_sink):
    site = make_site(tmp_path, thread_sink, {}, trusted_header="X-Remote-User")
    with TestClient(review_app(site.settings), client=("127.0.0.1", 5000)) as proxied:
        r = proxied.get("/", headers={"X-Remote-User": "rita"}, follow_redirects=False)
        assert r.status_code == 200 and "rita (reviewer)" in r.text
        assert proxied.get("/", headers={"X-Remote-User": "nobody"}, follow_redirects=False).status_code == 303
    with TestClient(review_app(site.settings), client=("192.0.2.9", 5000)) as outside:
        assert outside.get("/", headers={"X-Remote-User": "rita"}, follow_redirects=False).status_code == 303
    site2 = make_site(tmp_path / "b", thread_sink, {})
    with TestClient(review_app(site2.settings), client=("127.0.0.1", 5000)) as default:
        assert default.get("/", headers={"X-Remote-User": "rita"}, follow_redirects=False).status_code == 303


def test_a_picture_finding_is_shown_only_on_request_blurred_and_audited(tmp_path, thread_sink):
    """The reviewer sees which image a finding came from, and the image only after a click,
    blurred (never the original pixels); each view is audited."""
    import dataclasses
    import io
    import itertools
    import random
    from email.message import EmailMessage

    from PIL import Image

    from gateway.model import Finding

    rng = random.Random(7)
    photo = Image.new("RGB", (240, 240))
    photo.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(240 * 240)])
    png = io.BytesIO()
    photo.save(png, "PNG")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "x@outside.test", "carol@example.gov", "holiday"
    msg.set_content("see the picture")
    msg.add_attachment(png.getvalue(), maintype="image", subtype="png", filename="photo.png")
    raw = msg.as_bytes()
    item = held_item(subject="holiday", raw=raw, kinds=(), rule="inbound/adult-content", direction="inbound")
    item = dataclasses.replace(item, findings=(Finding(
        kind="adult_content.image", detector="adult_content", detail="Image scored 0.93 (threshold 0.80)",
        part="part 2: photo.png", score=0.93),))
    site = make_site(tmp_path, thread_sink, {"photo": item})
    with TestClient(review_app(site.settings), follow_redirects=True) as client:
        assert client.get(f"/held/{item.id}/picture", params={"part": "part 2: photo.png"}).status_code == 401
        login(client, "rita")
        page = client.get(f"/held/{item.id}")
        assert "part 2: photo.png" in page.text and "show it, blurred" in page.text
        assert "<img" not in page.text                     # nothing is shown until the reviewer asks
        shown = client.get(f"/held/{item.id}/picture", params={"part": "part 2: photo.png"})
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
        assert shown.headers["cache-control"] == "no-store"
        blurred = Image.open(io.BytesIO(shown.content)).convert("RGB").resize((240, 240))
        # blurring removes the noise: neighbouring pixels of the shown picture are nearly equal
        reds = blurred.tobytes()[0::3]
        jumps = sum(abs(a - b) for a, b in itertools.pairwise(reds)) / len(reds)
        assert jumps < 20, jumps
        assert client.get(f"/held/{item.id}/picture", params={"part": "part 9: none.png"}).status_code == 404
    entries = site.run(lambda s: s.audit_log(held_id=item.id))
    assert "view-picture" in [e.action for e in entries]
