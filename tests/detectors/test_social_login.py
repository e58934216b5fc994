"""social_login (inbound): account notices from social networks sent to a department address."""

from __future__ import annotations

import pytest

from gateway.model import Envelope
from tests.support.contentkit import detector, header, run
from tests.support.peers import make_message, send

SOCIAL = detector("social_login")


@pytest.mark.parametrize(("sender", "subject", "body", "kind"), [
    ("security@facebookmail.com", "Reset your password", "Hi Alice, we received a request to reset your "
     "password. Enter this code: 123456.", "social_login.password_reset"),
    ("info@twitter.com", "New login to Twitter from Chrome on Windows", "We noticed a new login to your "
     "account @alice_gov from a new device.", "social_login.login"),
    ("messages-noreply@linkedin.com", "Please confirm your email address", "Welcome to LinkedIn! Confirm your "
     "email to finish signing up.", "social_login.signup"),
    ("no-reply@mail.instagram.com", "bob started following you", "bob123 started following you on Instagram.",
     "social_login.follower"),
])
async def test_account_notices_to_a_department_address_fire(sender, subject, body, kind):
    [finding] = await run(SOCIAL, subject=subject, body=body, sender=sender, to="alice@example.gov")
    assert finding.kind == kind
    assert finding.detector == "social_login"
    assert "sent a" in finding.detail and "login name" in finding.detail
    assert finding.evidence[0].startswith(f"sender {sender} (")
    assert finding.evidence[1] == "to department address alice@example.gov"


async def test_a_bounce_address_subdomain_counts_as_the_service():
    [finding] = await run(SOCIAL, subject="Reset your password", body="Reset your password here.",
                          sender="Facebook <notification@facebookmail.com>", mail_from="bounce+x@facebookmail.com",
                          to="alice@example.gov")
    assert "(facebookmail.com)" in finding.detail


@pytest.mark.parametrize(("sender", "to", "subject", "body"), [
    # a notice-looking message from a domain that is not a social network (e.g. the department's own HR system)
    ("hr@example.gov", "alice@example.gov", "Reset your password", "Reset your password for the HR portal."),
    # a social network writing to someone outside the department
    ("security@facebookmail.com", "alice@example.org", "Reset your password", "Reset your password."),
    # a social network domain in a news digest that is not an account notice
    ("press@linkedin.com", "alice@example.gov", "Quarterly results", "LinkedIn reports revenue growth."),
    # look-alike domains do not count
    ("security@notfacebook.com", "alice@example.gov", "Reset your password", "Reset your password."),
])
async def test_other_mail_does_not_fire(sender, to, subject, body):
    assert await run(SOCIAL, subject=subject, body=body, sender=sender, to=to) == []


async def test_notice_is_tagged_and_itsd_notified_through_the_gateway(gw, sink):
    message = make_message(subject="Reset your password", body="Someone asked to reset your password.\n",
                           sender="security@facebookmail.com", to="alice@example.gov")
    code, _, _ = await send(gw.port, "security@facebookmail.com", ["alice@example.gov"], message,
                            source="127.0.0.2")
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"Subject: [Social network account] Reset your password" in got.data
    assert header(got.data, "X-Gateway-Findings").startswith("social_login.password_reset (A social networking service")
    # The notifier (another module) acts on verdict.notify: the policy asks it to tell ITSD.
    envelope = Envelope("security@facebookmail.com", ("alice@example.gov",), "127.0.0.2")
    inspection = await gw.gateway.pipeline.inspect(envelope, message)
    assert inspection.verdict.rule == "inbound/social-login"
    assert "itsd" in inspection.verdict.notify
