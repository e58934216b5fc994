"""credentials: passwords next to user names, private keys and tokens; placeholders and prose do not fire."""

from __future__ import annotations

import pytest

from gateway.config import Settings
from gateway.detectors import OptionError
from gateway.detectors.credentials import Credentials
from gateway.model import Finding
from tests.support import contentmail as cm


async def findings(body: str, **options) -> list[Finding]:
    return await cm.run(Credentials, cm.message(body, subject="Access"), options)


async def test_password_next_to_a_user_name_is_high_confidence_and_masked():
    [f] = await findings("Here is the login for the permit portal:\nUsername: jsmith2\nPassword: Tr0ub4dor&3\n")
    assert f.kind == "credentials.password"
    assert f.evidence == ("password ******** (11 characters) for user j******",)
    assert f.detail == ("Password in body: password ******** (11 characters) for user j****** "
                        "(1 found, high confidence)")
    assert "Tr0ub4dor" not in repr(f) and "jsmith2" not in repr(f)


async def test_password_alone_is_medium_and_threshold_is_an_option():
    assert [f.kind for f in await findings("the new wifi password is 'Spring2026!'")] == ["credentials.password"]
    assert await findings("the new wifi password is 'Spring2026!'", min_confidence="high") == []


@pytest.mark.parametrize("body", [
    "Your password expired; please reset it at the service desk.",
    "Password: ********",
    "Passwords must be protected and not shared with or divulged to others.",
    "Enter your password in the Password field and click here.",
    "password: <your password>",
    "Conference line 1-877-555-0100, passcode: 781871",
    "The password policy requires 12 characters.",
    "wget --mirror https://username:password@example.org/a/index.html",
    "A temporary password will be mailed to your home address.",
    "The Wi-Fi password is posted in the break room.",
    "Use your network password to log in to the timesheet system.",
    "See https://example.gov/reset-password for instructions.",
])
async def test_password_talk_is_not_a_password(body):
    assert await findings(body) == []


@pytest.mark.parametrize("body", [
    "user: admin pass: Adm1n#2026",
    "The password for the portal is Tr0ub4dor",
    "username=svc_backup password=Xk9#mP2v",
    "login jsmith pwd Summer#22",
])
async def test_password_phrasings(body):
    [f] = await findings(body)
    assert f.kind == "credentials.password"


async def test_the_word_pass_in_prose_is_not_a_password():
    assert await findings("We need to pass the 2026 budget; pass 2026 numbers to finance.") == []


async def test_password_in_a_url():
    [f] = await findings("Connect with postgres://report:S3cretPass@db.example.gov/stats")
    assert f.kind == "credentials.password"
    assert f.evidence == ("password ******** (10 characters) in a URL for user r*****",)


async def test_private_keys():
    key = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
           "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
           "-----END OPENSSH PRIVATE KEY-----\n")
    [f] = await findings("Key for the server:\n" + key)
    assert f.kind == "credentials.private_key"
    assert f.evidence == ("BEGIN OPENSSH PRIVATE KEY block",)
    assert "b3BlbnNzaC1rZXktdjE" not in repr(f)
    public = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"
    assert await findings(public) == []


# Built at run time so that no token-shaped string sits in the repository for scanners to flag.
TOKENS = {
    "AWS access key": "AKIA" + "Q3EGRRYDG7MVK2XA",
    "GitHub token": "ghp_" + "x9Kp2LmQ7vRt4WzY8nBc3DfGh6JkLs1MpQ0a",
    "Slack token": "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "Google API key": "AIza" + "SyD3kR9mP2xQ7vLw8nT4bY6cZ1aH5jK0sEf",
    "Stripe secret key": "sk_live_" + "51HqT2kLmN8pQ4rS6tUvWx9yZ",
}


@pytest.mark.parametrize("label", list(TOKENS))
async def test_tokens_with_known_formats(label):
    token = TOKENS[label]
    [f] = await findings(f"Use this in the deploy script: {token}\nThanks")
    assert f.kind == "credentials.token"
    assert f.evidence[0].startswith(label + " ") and f.evidence[0].endswith(f"({len(token)} characters)")
    assert token not in repr(f)


async def test_documentation_placeholders_are_not_tokens():
    assert await findings("aws_access_key_id = AKIAIOSFODNN7EXAMPLE") == []
    assert await findings("token: ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx") == []


async def test_credentials_in_an_attachment():
    raw = cm.message("Notes attached.", attachments=(("setup.txt", "text/plain",
                                                      b"VPN account: kjones\npassword = Blue!Harbor77\n"),))
    [f] = await cm.run(Credentials, raw)
    assert f.kind == "credentials.password" and f.part == "part 2: setup.txt"
    assert "high confidence" in f.detail


def test_unknown_option_is_an_error():
    with pytest.raises(OptionError):
        Credentials(Settings(), {"min_confidence": "certain"})
