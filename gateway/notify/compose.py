"""Notices as MIME messages, from Jinja2 templates (text and HTML) in the policy folder.

Templates live in policies/templates/ and a site may override any of them from its own folder
(`[notify] templates`). Every value that came from a message is attacker-controlled: the HTML
template autoescapes, and header values go through EmailMessage, which refuses line breaks.
Only masked evidence ever reaches a template.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import jinja2

from gateway.headers import safe_value


@dataclass(frozen=True)
class Notice:
    """One notice to one person: which template, and the facts it may show."""

    to: str
    template: str                          # "held", "released", "deleted", "decision", "itsd", "digest"
    context: dict = field(default_factory=dict)


def environment(*folders: str | Path) -> jinja2.Environment:
    """Site folder first, shipped folder last; HTML templates autoescape."""
    loader = jinja2.FileSystemLoader([str(f) for f in folders if f])
    env = jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape(["html.j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             extensions=["jinja2.ext.i18n"])
    env.install_null_translations(newstyle=True)     # a site installs gettext catalogs to translate
    return env


def compose(env: jinja2.Environment, notice: Notice, sender: str, hostname: str = "gateway") -> bytes:
    context = {**notice.context, "to": notice.to}
    subject = safe_value(env.get_template(f"{notice.template}.subject.j2").render(context), 250)
    text = env.get_template(f"{notice.template}.txt.j2").render(context)
    html = env.get_template(f"{notice.template}.html.j2").render(context)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = notice.to
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(time.time(), localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain=hostname)
    message["Auto-Submitted"] = "auto-generated"            # RFC 3834: nobody auto-replies to us
    message["X-Gateway-Notice"] = notice.template
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
