"""Notices as MIME messages, from Jinja2 templates (text and HTML) in the policy folder.

Templates live in policies/templates/ and a site may override any of them from its own folder
(`[notify] templates`). Every value that came from a message is attacker-controlled: the HTML
template autoescapes, and every header value is made one line of plain text first (header_text:
encoded words decoded, line breaks and control characters gone, no "=?" left for the email
package to decode when the field is set), so that the email package encodes it itself; the written
bytes are then read back and must carry exactly our fields (check_written).
Only masked evidence ever reaches a template.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import jinja2

from gateway.headers import check_written, header_text


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
    subject = header_text(env.get_template(f"{notice.template}.subject.j2").render(context), 250)
    text = env.get_template(f"{notice.template}.txt.j2").render(context)
    html = env.get_template(f"{notice.template}.html.j2").render(context)
    fields = {
        "From": address_field(sender, fallback=None),        # [notify] from: a mistake there fails the notice
        "To": address_field(notice.to),
        "Subject": subject,
        "Date": email.utils.formatdate(time.time(), localtime=False),
        "Message-ID": email.utils.make_msgid(domain=_HOSTNAME.sub("", hostname)[:200] or "gateway"),
        "Auto-Submitted": "auto-generated",                 # RFC 3834: nobody auto-replies to us
        "X-Gateway-Notice": header_text(notice.template, 40),
    }
    message = EmailMessage()
    for name, value in fields.items():
        message[name] = value
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    check_written(raw, fields)
    return raw


_HOSTNAME = re.compile(r"[^A-Za-z0-9.-]")
UNDISCLOSED = "undisclosed-recipients:;"


def address_field(address: str, fallback: str | None = UNDISCLOSED) -> str:
    """An address for From or To, as the email package writes it and reads it back: one mailbox.
    Anything else (a quoted local part holding an encoded word or a line break, say) is written as
    `fallback`, an empty group for To: the envelope, not the header, says where the notice goes."""
    try:
        if header_text(address, 1000) != address:
            raise ValueError("not one line of plain text")
        parsed = email.policy.default.header_factory("To", address)
        if parsed.defects or len(parsed.addresses) != 1 or not parsed.addresses[0].addr_spec:
            raise ValueError("not one mailbox")
        return str(parsed)
    except Exception as e:       # the email package's address parser on hostile input too
        if fallback is None:
            raise ValueError(f"{address!r} is not one mailbox: {e}") from None
        return fallback
