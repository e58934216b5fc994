"""A sender's release request reaches ITSD (at once or in the ITSD digest, by the ITSD settings) with a
link to the message; the reviewer's "answered" notice links the sender back to their request page."""

from __future__ import annotations

import email
import email.policy
import re
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from gateway.notify.notifier import Notifier
from gateway.notify.tokens import make_token
from tests.support.quarantine_fixtures import held_item
from tests.support.review_fixtures import ThreadSink, csrf_of, login, make_site, review_app

SECRET = "test-secret-key-0123456789"       # make_site's [review] secret_key, which signs the links
BASE = "https://review.example.gov"
WHY = "The payroll office needs this export for the audit <b>today</b>."


@pytest.fixture
def sink():
    s = ThreadSink().start()
    yield s
    s.stop()


def site_with(tmp_path, sink, **notify):
    return make_site(tmp_path, sink, {"asked": held_item(subject="Payroll export")},
                     notify={"from": "mail-policy@example.gov", "itsd": "itsd@example.gov", "base_url": BASE,
                             **notify})


def ask(client, item) -> str:
    url = f"/request/{make_token(SECRET, item.id, 'alice@example.gov')}"
    page = client.get(url)
    done = client.post(url, data={"csrf": csrf_of(page.text), "action": "request", "justification": WHY})
    assert "Your request was sent to ITSD" in done.text
    return url


def send_due(site) -> None:
    site.run(lambda s: Notifier(site.settings, s).run_once())


def mails_to(site, address):
    return [email.message_from_bytes(m.data, policy=email.policy.default) for m in site.sink.messages
            if address in m.rcpt_tos]


def test_a_release_request_goes_to_itsd_at_once_and_the_answer_links_back(tmp_path, sink):
    site = site_with(tmp_path, sink, itsd_immediate=["pii"])
    item = site.items["asked"]
    with TestClient(review_app(site.settings), follow_redirects=True) as client:
        ask(client, item)
        [notice] = [n for n in site.run(lambda s: s.outbox(held_id=item.id)) if n.recipient == "itsd@example.gov"]
        assert (notice.template, notice.digest) == ("itsd", "")
        send_due(site)
        [itsd] = mails_to(site, "itsd@example.gov")
        assert itsd["Subject"] == "[Gateway] Release requested: Payroll export"
        text = itsd.get_body(("plain",)).get_content()
        assert f"{BASE}/held/{item.id}" in text and "Release requested by alice@example.gov" in text
        assert WHY in text
        html = itsd.get_body(("html",)).get_content()
        assert "&lt;b&gt;today&lt;/b&gt;" in html and "<b>today</b>" not in html      # escaped

        login(client, "rita")
        page = client.get(f"/held/{item.id}").text
        client.post(f"/held/{item.id}/answer", data={"csrf": csrf_of(page), "text": "Which audit?"})
        send_due(site)
        [answer] = mails_to(site, "alice@example.gov")
        body = answer.get_body(("plain",)).get_content()
        link = re.search(rf"{re.escape(BASE)}(/request/\S+)", body).group(1)
        back = client.get(link)
        assert back.status_code == 200 and "Which audit?" in back.text


def test_a_release_request_waits_for_the_itsd_digest_by_default(tmp_path, sink):
    site = site_with(tmp_path, sink)                   # pii is not among itsd_immediate (virus)
    item = site.items["asked"]
    with TestClient(review_app(site.settings), follow_redirects=True) as client:
        ask(client, item)
    [notice] = [n for n in site.run(lambda s: s.outbox(held_id=item.id)) if n.recipient == "itsd@example.gov"]
    assert notice.digest == "itsd" and notice.due_at > notice.created_at
    assert notice.context["requested_by"] == "alice@example.gov" and notice.context["justification"] == WHY
