"""A reviewer's day in a real headless Chromium (Debian's chromium and chromium-driver): find last
week's held mail with personal information from one sender, read why each was held from the queue
without opening it, release two with a reason (confirmed first) and delete one, see the findings
grouped on a message page, and find it all in the audit log (filtered, grouped per message).

Set REVIEW_SCREENSHOTS=docs/images to refresh the screenshots in docs/review.md."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.review.test_browser import (  # noqa: F401  (the browser fixture)
    browser,
    click_and_wait,
    pytestmark,
    shot,
)
from tests.review.test_queue_filters_audit import exe_item
from tests.support.quarantine_fixtures import held_item
from tests.support.review_fixtures import ThreadedGateway, ThreadSink, make_site

CLERK = "hr.clerk@example.gov"


@pytest.fixture
def day(tmp_path):
    sink = ThreadSink().start()
    now = time.time()
    items = {
        "march": held_item(subject="Payroll March", kinds=("pii.ssn",), sender=CLERK, received_at=now - 2 * 86400),
        "april": held_item(subject="Payroll April", kinds=("pii.ssn",), sender=CLERK, received_at=now - 3 * 86400),
        "refund": held_item(subject="Card refund <b>urgent</b>", kinds=("pii.ssn",), sender=CLERK,
                            received_at=now - 4 * 86400),
        "old": held_item(subject="Payroll last year", kinds=("pii.ssn",), sender=CLERK,
                         received_at=now - 20 * 86400),
        "other": held_item(subject="Payroll other office", kinds=("pii.ssn",), received_at=now - 86400,
                           body="Payroll run: employee SSN 536-22-6789 (social security), see attached.\n"),
        "budget": held_item(subject="Budget draft", kinds=("confidential.marking",), rule="outbound/confidential",
                            sender=CLERK, received_at=now - 3600),
        "exe": exe_item(received_at=now - 600),
        "virus": held_item(subject="Invoice 4471", kinds=("virus",), rule="inbound/malware", direction="inbound",
                           sender="billing@supplier.example", rcpts=("carol@example.gov",), received_at=now - 300),
    }
    site = make_site(tmp_path, sink, items)
    gateway = ThreadedGateway(site.settings).start()
    yield site, gateway
    gateway.stop()
    sink.stop()


def released(site) -> list:
    """The messages themselves at the next hop, not our notices about them."""
    return [m for m in site.sink.messages if b"\r\nX-Gateway-Notice:" not in m.data.split(b"\r\n\r\n")[0]]


def log_in(driver, base: str, name: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password)
    click_and_wait(driver, (By.ID, "login"))


def test_a_reviewers_day_from_the_queue_to_the_audit_log(day, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    site, gateway = day
    base = gateway.base_url
    log_in(browser, base, "rita", "rita-review-password")

    # Find: one search box for the sender, personal information chosen from what is held, last week.
    week_ago = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%d")
    browser.find_element(By.ID, "search").send_keys("hr.clerk")
    Select(browser.find_element(By.ID, "category-filter")).select_by_visible_text("pii")
    browser.execute_script("document.querySelector('input[name=since]').value = arguments[0]", week_ago)
    click_and_wait(browser, (By.ID, "apply-filters"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.queue tbody tr")
    subjects = [r.find_element(By.CSS_SELECTOR, "a.subject").text for r in rows]
    assert sorted(subjects) == ["Card refund <b>urgent</b>", "Payroll April", "Payroll March"]   # shown as text

    # Why, without opening: rule, the finding in words, its masked evidence, direction and age.
    for row in rows:
        reason = row.find_element(By.CSS_SELECTOR, "td.reason").text
        assert "outbound/pii" in reason and "pii.ssn found in the body" in reason
        assert "SSN ***-**-6789" in reason and "123-45" not in reason
        assert "(outbound," in reason and " d ago)" in reason
    shot(browser, "review-queue-reasons.png", tmp_path)

    # Release two with a reason: the confirmation says how many, then the result lists them.
    by_subject = {r.find_element(By.CSS_SELECTOR, "a.subject").text: r for r in rows}
    for subject in ("Payroll March", "Payroll April"):
        by_subject[subject].find_element(By.CSS_SELECTOR, "input[name=ids]").click()
    browser.find_element(By.ID, "bulk-reason").send_keys("Payroll provider, agreed with HR")
    click_and_wait(browser, (By.ID, "bulk-release"))
    assert browser.find_element(By.ID, "bulk-count").text.startswith("2 will be released")
    shot(browser, "review-bulk-confirm.png", tmp_path)
    click_and_wait(browser, (By.ID, "bulk-do"))
    assert browser.find_element(By.ID, "bulk-summary").text == "2 released"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bulk-done li[data-id]")) == 2
    deadline = time.time() + 10
    while len(released(site)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert sorted(m.data.split(b"Subject: ")[1].split(b"\r\n")[0] for m in released(site)) == [
        b"Payroll April", b"Payroll March"]

    # Delete the third: all on the page that still matches, confirmed.
    browser.get(base + f"/?q=hr.clerk&category=pii&since={week_ago}")
    click_and_wait(browser, (By.ID, "select-page"))
    assert all(b.is_selected() for b in browser.find_elements(By.CSS_SELECTOR, "input[name=ids]"))
    browser.find_element(By.ID, "bulk-reason").send_keys("Sent to the wrong bank; the clerk resends it")
    click_and_wait(browser, (By.ID, "bulk-delete"))
    assert browser.find_element(By.ID, "bulk-count").text.startswith("1 will be deleted")
    click_and_wait(browser, (By.ID, "bulk-do"))
    assert browser.find_element(By.ID, "bulk-summary").text == "1 deleted"

    # A bulk release that an admin must do is refused, with why.
    browser.get(base + "/?q=invoice")
    click_and_wait(browser, (By.ID, "select-page"))
    browser.find_element(By.ID, "bulk-reason").send_keys("looks fine")
    click_and_wait(browser, (By.ID, "bulk-release"))
    assert browser.find_element(By.ID, "bulk-count").text.startswith("0 will be released")
    assert browser.find_element(By.ID, "bulk-admin").text.startswith("1 need an admin")
    click_and_wait(browser, (By.ID, "bulk-do"))
    assert browser.find_element(By.ID, "bulk-summary").text.startswith("0 released; 1 not")
    assert "admin" in browser.find_element(By.CSS_SELECTOR, "#bulk-refused .why").text

    # The message page groups the findings: one row per part and detector.
    browser.get(base + f"/held/{site.items['exe'].id}")
    groups = browser.find_elements(By.CSS_SELECTOR, "#findings tr.group")
    assert len(groups) == 2 and "attachments" in groups[0].text and "antivirus" in groups[1].text
    shot(browser, "review-message-findings.png", tmp_path)
    browser.get(base + f"/held/{site.items['other'].id}")
    marked = [m.text for m in browser.find_elements(By.CSS_SELECTOR, "#body-text mark.evidence")]
    assert marked == ["***-**-6789"] and "536-22" not in browser.find_element(By.ID, "body-text").text
    browser.execute_script("document.querySelector('section.body').scrollIntoView()")
    shot(browser, "review-message-evidence.png", tmp_path)

    # The audit log, as an admin: filtered by who and what, then grouped per message.
    click_and_wait(browser, (By.CSS_SELECTOR, "form[action='/logout'] button"))
    log_in(browser, base, "ada", "ada-admin-password")
    browser.get(base + "/audit")
    browser.find_element(By.ID, "audit-who").send_keys("rita")
    Select(browser.find_element(By.ID, "audit-action")).select_by_visible_text("release")
    click_and_wait(browser, (By.ID, "audit-apply"))
    assert browser.find_element(By.ID, "audit-total").text.startswith("2 entries")
    Select(browser.find_element(By.ID, "audit-action")).select_by_visible_text("delete")
    click_and_wait(browser, (By.ID, "audit-apply"))
    assert browser.find_element(By.ID, "audit-total").text.startswith("1 entry")
    assert "Sent to the wrong bank" in browser.find_element(By.CSS_SELECTOR, "table.audit").text
    browser.get(base + "/audit?who=rita&group=message")
    sections = browser.find_elements(By.CSS_SELECTOR, "section.audit-group")
    assert {site.items[k].id for k in ("march", "april", "refund")} <= {s.get_attribute("data-message")
                                                                        for s in sections}
    assert browser.find_element(By.ID, "audit-csv").get_attribute("href").endswith("/audit.csv?who=rita")
    shot(browser, "review-audit.png", tmp_path)


@pytest.fixture
def asked(tmp_path):
    sink = ThreadSink().start()
    site = make_site(tmp_path, sink, {"pack": held_item(subject="Board pack for the auditors", kinds=("pii.ssn",))},
                     notify={"from": "mail-policy@example.gov", "itsd": "itsd@example.gov",
                             "itsd_immediate": ["pii", "virus"]})
    gateway = ThreadedGateway(site.settings).start()
    yield site, gateway
    gateway.stop()
    sink.stop()


def test_a_release_request_reaches_itsd_and_the_answer_leads_back(asked, browser, tmp_path):  # noqa: F811
    import email
    import email.policy
    import re

    from selenium.webdriver.common.by import By

    from gateway.notify.notifier import Notifier
    from gateway.notify.tokens import make_token

    site, gateway = asked
    base, item = gateway.base_url, site.items["pack"]

    def notices_to(address: str) -> list:
        site.run(lambda s: Notifier(site.settings, s).run_once())
        return [email.message_from_bytes(m.data, policy=email.policy.default).get_body(("plain",)).get_content()
                for m in site.sink.messages if address in m.rcpt_tos]

    # The sender asks for release from the link in their notice.
    browser.get(base + f"/request/{make_token(site.settings.review.secret_key, item.id, 'alice@example.gov')}")
    browser.find_element(By.NAME, "justification").send_keys("The auditors need the board pack by Friday.")
    click_and_wait(browser, (By.CSS_SELECTOR, "#request-form button[type=submit]"))
    assert "sent to ITSD" in browser.page_source

    # ITSD gets a notice at once (pii is in itsd_immediate) with a link to the message; a reviewer follows it.
    [itsd] = notices_to("itsd@example.gov")
    assert "Release requested by alice@example.gov" in itsd and "by Friday" in itsd
    link = re.search(r"(http://\S+/held/" + item.id + ")", itsd).group(1)
    browser.get(link)
    browser.find_element(By.ID, "name").send_keys("rita")
    browser.find_element(By.ID, "password").send_keys("rita-review-password")
    click_and_wait(browser, (By.ID, "login"))
    assert browser.find_element(By.ID, "subject").text == "Board pack for the auditors"
    form = browser.find_element(By.ID, "answer-form")
    form.find_element(By.NAME, "text").send_keys("Which auditors? Please name the firm.")
    click_and_wait(browser, form.find_element(By.CSS_SELECTOR, "button"))

    # The sender's answer notice links back to their request page, which shows the answer.
    [answer] = notices_to("alice@example.gov")
    back = re.search(r"(http://\S+/request/\S+)", answer).group(1)
    click_and_wait(browser, (By.CSS_SELECTOR, "form[action='/logout'] button"))    # logged out before we go on
    browser.get(back)
    assert "Which auditors? Please name the firm." in browser.page_source
