"""End to end in a real headless Chromium (Debian's /usr/bin/chromium via Selenium and Debian's
chromedriver; nothing is downloaded): a malformed message is held by the running gateway, a
reviewer logs in, filters the queue, opens the message, releases it, and it arrives at the sink.

Set REVIEW_SCREENSHOTS=docs/images to refresh the screenshots in docs/review.md."""

from __future__ import annotations

import os
import shutil
import smtplib
import time
from pathlib import Path

import pytest

from tests.support.quarantine_fixtures import held_item
from tests.support.review_fixtures import ThreadedGateway, ThreadSink, make_site

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
                                reason="Debian's chromium and chromium-driver are installed by scripts/setup test")

MALFORMED = (b"From: alice@example.gov\r\nTo: bob@example.org\r\nSubject: Quarterly figures for the partner\r\n"
             b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\nMessage-ID: <e2e-1@example.gov>\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
             b"Hello Bob, the figures are below.\r\n--XX\r\nContent-Type: text/csv; name=figures.csv\r\n"
             b"Content-Disposition: attachment; filename=figures.csv\r\n\r\nquarter,total\r\nQ3,1200\r\n")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1360,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def running(tmp_path):
    sink = ThreadSink().start()
    now = time.time()
    others = {   # a realistic queue around the message under test, for the screenshots
        "a": held_item(subject="Payroll export March", kinds=("pii.ssn",), received_at=now - 5 * 3600),
        "b": held_item(subject="Invoice 4471", kinds=("virus",), rule="inbound/malware", direction="inbound",
                       sender="billing@supplier.example", rcpts=("carol@example.gov",), received_at=now - 26 * 3600),
        "c": held_item(subject="Draft: budget (CONFIDENTIAL)", kinds=("confidential.marking",),
                       rule="outbound/confidential", received_at=now - 50 * 3600),
    }
    site = make_site(tmp_path, sink, others)
    gateway = ThreadedGateway(site.settings).start()
    yield site, gateway
    gateway.stop()
    sink.stop()


def click_and_wait(driver, element) -> None:
    """Click, then wait until the browser has left the current page and loaded the next one. `element`
    may be a (By, value) locator: it is found again once if chromedriver reports its node replaced.
    Leaving is seen as a mark set on the old page's window being gone, not through an element of the
    old page: chromedriver reports such an element in several ways while the page is replaced."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.__before_click = true")
    locator = element if isinstance(element, tuple) else None
    try:
        (driver.find_element(*locator) if locator else element).click()
    except (StaleElementReferenceException, WebDriverException) as e:
        if locator is None or not (isinstance(e, StaleElementReferenceException)
                                   or "does not belong to the document" in str(e)):
            raise
        driver.execute_script("window.__before_click = true")
        driver.find_element(*locator).click()

    def next_page_loaded(d) -> bool:
        return bool(d.execute_script(
            "return window.__before_click === undefined && document.readyState === 'complete'"))

    WebDriverWait(driver, 15, ignored_exceptions=(WebDriverException,)).until(next_page_loaded)


def shot(driver, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("REVIEW_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(folder / name))


def test_reviewer_releases_a_held_message_in_the_browser(running, browser, tmp_path):
    from selenium.webdriver.common.by import By

    site, gateway = running
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as smtp:
        refused = smtp.sendmail("alice@example.gov", ["bob@example.org"], MALFORMED)
    assert refused == {}                                        # 250 ...
    assert not [m for m in site.sink.messages if b"Q3,1200" in m.data]     # ... and held rather than relayed

    browser.get(gateway.base_url + "/")
    assert "/login" in browser.current_url
    browser.find_element(By.ID, "name").send_keys("rita")
    browser.find_element(By.ID, "password").send_keys("rita-review-password")
    click_and_wait(browser, browser.find_element(By.ID, "login"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Quarantine queue"
    assert "Quarterly figures for the partner" in browser.page_source
    shot(browser, "review-queue.png", tmp_path)

    subject_filter = browser.find_element(By.ID, "subject-filter")
    subject_filter.send_keys("quarterly")
    click_and_wait(browser, browser.find_element(By.ID, "apply-filters"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.queue tbody tr")
    assert len(rows) == 1 and "Payroll" not in browser.page_source
    click_and_wait(browser, browser.find_element(By.LINK_TEXT, "Quarterly figures for the partner"))

    assert browser.find_element(By.ID, "subject").text == "Quarterly figures for the partner"
    assert browser.find_element(By.ID, "rule").text == "outbound/malformed"
    assert "figures.csv" in browser.find_element(By.CSS_SELECTOR, "section.attachments").text
    shot(browser, "review-message.png", tmp_path)

    browser.find_element(By.ID, "release-reason").send_keys("Checked with the sender: a truncated CSV, harmless")
    click_and_wait(browser, browser.find_element(By.ID, "release"))
    assert "Released to bob@example.org" in browser.find_element(By.ID, "flash").text
    assert browser.find_element(By.ID, "status").text == "released"

    def released() -> list:        # the message itself, not our notices about it (X-Gateway-Notice)
        return [m for m in site.sink.messages if b"\r\nX-Gateway-Notice:" not in m.data.split(b"\r\n\r\n")[0]]

    deadline = time.time() + 10
    while not released() and time.time() < deadline:
        time.sleep(0.05)
    [got] = released()
    assert got.mail_from == "alice@example.gov" and got.rcpt_tos == ["bob@example.org"]
    assert b"Subject: Quarterly figures for the partner" in got.data and b"Q3,1200" in got.data

    browser.get(gateway.base_url + "/dashboard")
    assert browser.find_element(By.CSS_SELECTOR, "svg.chart") is not None
    shot(browser, "review-dashboard.png", tmp_path)
