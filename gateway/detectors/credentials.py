"""credentials: passwords, private keys and access tokens in mail (policy: Provisions for Security, passwords).

"Passwords must be protected and not shared with or divulged to others." Reported:

- `credentials.private_key`: a PEM (or OpenSSH, PuTTY, PGP) private key block;
- `credentials.token`: API and cloud tokens with a documented format (AWS, GitHub, GitLab, Slack, Google,
  Stripe, Twilio, SendGrid, npm, PyPI, OpenAI, Azure storage keys, ...), high confidence by their prefix
  and shape; documentation placeholders (AKIAIOSFODNN7EXAMPLE, "xxxx") are skipped;
- `credentials.password`: "password: value" with a user name or login next to it (high), or a
  password-like value alone (medium); a URL with user:password@host.

One regular-expression pass over the text finds every candidate; evidence shows only a prefix and the
length of a secret ("ghp_… (40 characters)", "password ******** (9 characters) for user j***").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import OptionError, options_with_defaults
from gateway.matching.prefilter import Prefilter
from gateway.message.plaintext import MessageText, limits_finding, off_loop_if_large
from gateway.message.text import message_text
from gateway.model import Finding, Mail

LEVELS = {"low": 0, "medium": 1, "high": 2}
DEFAULTS: dict[str, Any] = {
    "min_confidence": "medium",
    "count_quoted": False,
    "user_window": 200,         # characters between a password and a user name
}
TOKENS = {
    "aws_access_key": r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|APKA)[0-9A-Z]{16}",
    "github_token": r"gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255}",
    "gitlab_token": r"glpat-[A-Za-z0-9_-]{20,}",
    "slack_token": r"xox[abposr]-[0-9A-Za-z-]{10,250}",
    "slack_webhook": r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,}",
    "google_api_key": r"AIza[0-9A-Za-z_-]{35}",
    "google_oauth_secret": r"GOCSPX-[A-Za-z0-9_-]{28}",
    "stripe_secret_key": r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{24,99}",
    "twilio_key": r"SK[0-9a-f]{32}",
    "sendgrid_key": r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
    "npm_token": r"npm_[A-Za-z0-9]{36}",
    "pypi_token": r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",
    "openai_key": r"sk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}",
    "azure_storage_key": r"AccountKey=[A-Za-z0-9+/]{86}==",
    "private_key": r"-----BEGIN (?:RSA |DSA |EC |OPENSSH |ENCRYPTED |PGP |SSH2 ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----"
                   r"|PuTTY-User-Key-File-\d: ",
}
LABELS = {"aws_access_key": "AWS access key", "github_token": "GitHub token", "gitlab_token": "GitLab token",
          "slack_token": "Slack token", "slack_webhook": "Slack webhook URL", "google_api_key": "Google API key",
          "google_oauth_secret": "Google OAuth client secret", "stripe_secret_key": "Stripe secret key",
          "twilio_key": "Twilio API key", "sendgrid_key": "SendGrid API key", "npm_token": "npm token",
          "pypi_token": "PyPI token", "openai_key": "OpenAI API key", "azure_storage_key": "Azure storage account key",
          "private_key": "Private key", "aws_secret_key": "AWS secret access key"}
_PASSWORD_WORD = r"(?:password|passwd|pass\s?word|pwd|passcode|pass\s?phrase|pw|kennwort|mot de passe|contraseña)"
# Each token format is found only when one of its literal anchors occurs (one Hyperscan pass for all
# of them, `_anchors`), and then by its own pattern, which starts with that literal so the engine skips
# straight to it.
ANCHORS = {
    "aws_access_key": ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "APKA"),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), "gitlab_token": ("glpat-",),
    "slack_token": ("xox",), "slack_webhook": ("hooks.slack.com",), "google_api_key": ("AIza",),
    "google_oauth_secret": ("GOCSPX-",), "stripe_secret_key": ("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
    "twilio_key": ("SK",), "sendgrid_key": ("SG.",), "npm_token": ("npm_",), "pypi_token": ("pypi-",),
    "openai_key": ("T3BlbkFJ",), "azure_storage_key": ("AccountKey=",), "private_key": ("PRIVATE KEY", "PuTTY-User"),
}
_TOKEN_RES = {k: re.compile(f"(?:{v})(?![A-Za-z0-9_])") for k, v in TOKENS.items()}
_AWS_SECRET = re.compile(r"(?i)aws_?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])")
_URL_PASSWORD = re.compile(r"://([^\s:/@\"'<>]{1,64}):([^\s:/@\"'<>]{3,64})@[\w.-]+")
_PASSWORD_ANCHORS = ("pass", "pwd", "pw", "kennwort", "mot de passe", "contraseña")
_PASSWORD = re.compile(
    rf"(?:(?i:{_PASSWORD_WORD})\b(?=[\s:=\-])[^\S\n]*(?:(?i:is|was|will be|for (?:the |your |my )?\S+ is)[^\S\n]*)?"
    r"[:=\-]?|(?i:pass)[^\S\n]*[:=])"           # the bare word "pass" only as a label: "pass: ..."
    r"[^\S\n]*(?P<pwq>[\"'“‘]?)(?P<pwvalue>[^\s\"'“”‘’<>]{4,64})(?P=pwq)")
_MEETING = re.compile(r"(?i)\b(?:meeting id|conference id|webinar id"
                      r"|join (?:the|this|on your|by) (?:meeting|webinar|computer|phone|web)"
                      r"|microsoft teams meeting|zoom\.us/j/|webex\.com/|meet\.google\.com/)")
_USER = re.compile(r"(?i)\b(?:user\s?name|user\s?id|user|login(?:\s?(?:name|id))?|logon|account|uid|e-?mail)\b"
                   r"[^\S\n]*(?:is)?[^\S\n]*[:=\-]?[^\S\n]*[\"']?(?P<user>[\w.@+-]{3,64})")
_PLACEHOLDER = re.compile(r"(?i)example|sample|dummy|placeholder|x{4,}|\*{3,}|^<|^\[|^\{|your|changeme|redacted|"
                          r"^(?:password|secret|passw0rd|12345678?|abcd?e?f?)$")
_NOT_A_PASSWORD = frozenset({
    "is", "was", "will", "be", "the", "a", "an", "and", "or", "to", "for", "of", "on", "in", "at", "by", "with",
    "your", "my", "our", "their", "his", "her", "its", "this", "that", "these", "those", "reset", "change",
    "changed", "expired", "expires", "required", "protected", "incorrect", "invalid", "wrong", "forgotten", "forgot",
    "sent", "send", "please", "click", "here", "below", "above", "again", "now", "new", "old", "same", "field",
    "fields", "box", "prompt", "policy", "policies", "length", "characters", "manager", "management", "protection",
    "hint", "hints", "recovery", "request", "requested", "requests", "setting", "settings", "strength", "strong",
    "weak", "never", "should", "must", "can", "cannot", "could", "would", "may", "might", "do", "does", "did", "not",
    "no", "yes", "if", "when"
})


@functools.cache
def _anchors() -> tuple[list[str], Prefilter]:
    """The token kinds and one automaton for their anchors, built once per process (about 40 ms)."""
    kinds = list(ANCHORS)
    return kinds, Prefilter(["|".join(re.escape(a) for a in ANCHORS[k]) for k in kinds])


class Credentials:
    name: ClassVar[str] = "credentials"
    kinds: ClassVar[frozenset[str]] = frozenset({"credentials.*", "unscanned.text_limits"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        if opts["min_confidence"] not in LEVELS:
            raise OptionError(f"detector 'credentials': min_confidence must be one of {', '.join(LEVELS)}")
        self.settings = settings
        self.level = LEVELS[opts["min_confidence"]]
        self.window = opts["user_window"]
        # hidden HTML text and footers are still sent: a value hidden there is still disclosed
        self.zones = ("new", "forwarded", "metadata", "hidden", "disclaimer") + (("quoted",) if opts["count_quoted"]
                                                                                 else ())

    def prepare(self) -> None:
        _anchors()

    async def check(self, mail: Mail) -> list[Finding]:
        text = await message_text(mail, self.settings)
        return await off_loop_if_large(text, lambda: self.collect(text)) + limits_finding(text, self.name)

    def collect(self, text: MessageText) -> list[Finding]:
        found: dict[str, list[tuple[int, str, str]]] = {}     # kind -> [(level, evidence, source)]
        for segment in text.segments:
            if segment.zone in self.zones and segment.text:
                for kind, level, evidence in self.scan(segment.text):
                    found.setdefault(kind, []).append((level, evidence, segment.source))
        findings = []
        for kind, hits in found.items():
            hits = [h for h in hits if h[0] >= self.level]
            if not hits:
                continue
            best = max(h[0] for h in hits)
            sources = list(dict.fromkeys(h[2] for h in hits))
            evidence = tuple(dict.fromkeys(h[1] for h in hits))[:5]
            what = {"private_key": "Private key", "token": "Access token", "password": "Password"}[kind]
            findings.append(Finding(
                kind=f"credentials.{kind}", detector=self.name, score=float(len(evidence)),
                part=None if sources[0] in ("body", "subject") else sources[0],
                detail=f"{what} in {', '.join(sources[:3])}: {evidence[0]} "
                       f"({len(evidence)} found, {'high' if best == 2 else 'medium'} confidence)",
                evidence=evidence))
        return findings

    def scan(self, text: str) -> list[tuple[str, int, str]]:
        """[(kind, confidence level, masked evidence)] for one piece of text."""
        out: list[tuple[str, int, str]] = []
        for kind, level, evidence, _ in self.hits(text):
            if (kind, level, evidence) not in out:
                out.append((kind, level, evidence))
        return out

    def hits(self, text: str) -> list[tuple[str, int, str, tuple[tuple[int, int, str], ...]]]:
        """[(kind, level, masked evidence, spans)]: spans are (start, end, mask) of the secret (and the
        user name next to a password) in `text`, for masking evidence (gateway/evidence.py)."""
        out: list[tuple[str, int, str, tuple[tuple[int, int, str], ...]]] = []
        kinds, prefilter = _anchors()
        for kind in (kinds[i] for i in sorted(prefilter.candidates(text))):   # caseless there: a superset
            if not any(a in text for a in ANCHORS[kind]):
                continue
            for m in _TOKEN_RES[kind].finditer(text):
                if m.start() and (text[m.start() - 1].isalnum() or text[m.start() - 1] == "_"):
                    continue
                value = m.group(0)
                if kind == "private_key":
                    # the key material follows the header, up to the END line (or all that is left)
                    end = text.find("-----END", m.end())
                    close = text.find("-----", end + 8) if end >= 0 else -1
                    end = close + 5 if close >= 0 else len(text)
                    out.append(("private_key", 2, f"{value.strip('- :')} block",
                                ((m.end(), end, " [private key] "),)))
                elif not _PLACEHOLDER.search(value) and len(set(value)) > 6:
                    out.append(("token", 2, f"{LABELS[kind]} {_mask_token(value)}",
                                ((m.start(), m.end(), _mask_token(value)),)))
        lowered = text.lower()
        if "aws" in lowered and "secret" in lowered:
            for m in _AWS_SECRET.finditer(text):
                if not _PLACEHOLDER.search(m.group(1)):
                    out.append(("token", 2, f"{LABELS['aws_secret_key']} {_mask_token(m.group(1))}",
                                ((m.start(1), m.end(1), _mask_token(m.group(1))),)))
        if "://" in text and "@" in text:
            for m in _URL_PASSWORD.finditer(text):
                user, secret = m.group(1), m.group(2)
                if not _PLACEHOLDER.search(secret) and not secret.isdigit():
                    out.append(("password", 2, f"password {'*' * 8} ({len(secret)} characters) in a URL "
                                               f"for user {_mask_user(user)}",
                                ((m.start(1), m.end(1), _mask_user(user)), (m.start(2), m.end(2), "*" * 8))))
        for anchor in _PASSWORD_ANCHORS:
            pos = lowered.find(anchor)
            while pos >= 0:
                if pos == 0 or not lowered[pos - 1].isalnum():
                    m = _PASSWORD.match(text, pos)
                    found = self._password(text, m) if m else None
                    if found:
                        out.append(found)
                pos = lowered.find(anchor, pos + 1)
        return out

    def _password(self, text: str, m: re.Match) -> tuple[str, int, str, tuple[tuple[int, int, str], ...]] | None:
        secret = m.group("pwvalue").rstrip(".,;:!?)")
        quoted = bool(m.group("pwq"))
        if len(secret) < 4 or secret.lower() in _NOT_A_PASSWORD or _PLACEHOLDER.search(secret):
            return None
        shaped = any(c.isdigit() for c in secret) or any(not c.isalnum() for c in secret) \
            or (secret != secret.lower() and secret != secret.upper() and not secret.istitle())
        if not (shaped or quoted):
            return None
        start, end = m.start(), m.end()
        spans = [(m.start("pwvalue"), m.start("pwvalue") + len(secret), "*" * 8)]
        user = None
        for u in _USER.finditer(text, max(0, start - self.window), min(len(text), end + self.window)):
            name = u.group("user")
            if name.lower() not in _NOT_A_PASSWORD and not re.match(rf"(?i){_PASSWORD_WORD}$", name):
                user = name
                spans.append((u.start("user"), u.end("user"), _mask_user(name)))
                break
        # a numbers-only code with no user name is usually a meeting or voicemail passcode; so is a passcode
        # printed in a meeting invitation's join block (sent to every invitee, not a login given to someone)
        meeting = not user and _MEETING.search(text, max(0, start - 400), min(len(text), end + 400)) is not None
        level = 2 if user else (0 if secret.isdigit() or meeting else 1)
        who = f" for user {_mask_user(user)}" if user else ""
        return ("password", level, f"password {'*' * 8} ({len(secret)} characters){who}", tuple(spans))


@functools.cache
def _masker() -> Credentials:
    return Credentials(Settings(), {"min_confidence": "low"})


def redactions(text: str) -> list[tuple[int, int, str]]:
    """(start, end, mask) of every secret this detector recognises in `text`, at any confidence: what
    evidence must not show (gateway/evidence.py)."""
    return [span for *_, spans in _masker().hits(text) for span in spans]


def _mask_token(value: str) -> str:
    prefix = re.match(r"[A-Za-z]+[_-]|AKIA|ASIA|AIza|SG\.|xox[a-z]-|https://hooks\.slack\.com/services/", value)
    keep = prefix.group(0) if prefix else value[:2]
    return f"{keep}… ({len(value)} characters)"


def _mask_user(user: str) -> str:
    return user[:1] + "*" * min(len(user) - 1, 7)
