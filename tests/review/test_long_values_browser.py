"""A subject of 300 characters without a space (or a long address or finding) wraps in the review pages:
the queue's Rule and Findings columns stay in the window, in a real headless Chromium."""

from __future__ import annotations

import dataclasses
import time

import pytest

from tests.review import test_browser as rb
from tests.support.peers import free_port
from tests.support.quarantine_fixtures import held_item
from tests.support.review_fixtures import ThreadedGateway, ThreadSink, make_site

pytestmark = rb.pytestmark
browser = rb.browser                 # the same headless Chromium fixture
click_and_wait = rb.click_and_wait

LONG_SUBJECT = "Quarterly" + "X" * 291
LONG_SENDER = "a" * 120 + "@" + "b" * 60 + ".example"


@pytest.fixture
def running(tmp_path):
    sink = ThreadSink().start()
    now = time.time()
    site = make_site(tmp_path, sink, {
        "long": held_item(subject=LONG_SUBJECT, kinds=("confidential.marking", "pii." + "ssn" * 30),
                          sender=LONG_SENDER, rcpts=(LONG_SENDER,), received_at=now - 60),
        "short": held_item(subject="Payroll", kinds=("pii.ssn",), received_at=now - 120),
    })
    smtp = dataclasses.replace(site.settings.smtp, listen=f"127.0.0.1:{free_port()}")
    gateway = ThreadedGateway(dataclasses.replace(site.settings, smtp=smtp)).start()
    yield site, gateway
    gateway.stop()
    sink.stop()


def right_edge(driver, element) -> float:
    return driver.execute_script("const r = arguments[0].getBoundingClientRect(); return r.right;", element)


def test_a_long_subject_wraps_and_the_rule_column_stays_in_the_window(running, browser):
    from selenium.webdriver.common.by import By

    site, gateway = running
    browser.get(gateway.base_url + "/")
    browser.find_element(By.ID, "name").send_keys("rita")
    browser.find_element(By.ID, "password").send_keys("rita-review-password")
    click_and_wait(browser, browser.find_element(By.ID, "login"))
    width = browser.execute_script("return document.documentElement.clientWidth")
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "table.queue tbody tr") if "Quarterly" in r.text)
    cells = row.find_elements(By.TAG_NAME, "td")
    subject, rule, kinds = cells[6], cells[7], cells[8]
    assert subject.value_of_css_property("overflow-wrap") == "anywhere"
    assert right_edge(browser, rule) <= width, (width, right_edge(browser, rule))
    assert right_edge(browser, kinds) <= width, (width, right_edge(browser, kinds))
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width     # no sideways scroll

    link = browser.find_element(By.CSS_SELECTOR, f"a.subject[href='/held/{site.items['long'].id}']")
    click_and_wait(browser, link)
    heading = browser.find_element(By.ID, "subject")
    assert heading.text.replace("\n", "") == LONG_SUBJECT
    assert right_edge(browser, heading) <= width
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width
