"""The email notifier: a plain-text and an HTML part, sent over SMTP with aiosmtplib.

STARTTLS (port 587) or TLS from the first byte (465), a login when configured, and every
recipient in one message. The server's certificate is checked against the system's trust
store, or the notifier's ``ca_file``.
"""

from __future__ import annotations

import html
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import aiosmtplib

from tracklane.alerts.messages import Message, message
from tracklane.alerts.model import Notification
from tracklane.alerts.rules import NotifierSpec, SmtpSpec


def email_message(spec: NotifierSpec, smtp: SmtpSpec, n: Notification) -> EmailMessage:
    m = message(n, spec.locale)
    mail = EmailMessage()
    mail["Subject"] = m.title
    mail["From"] = smtp.sender
    mail["To"] = ", ".join(smtp.to)
    mail["Date"] = format_datetime(n.ends_at or n.starts_at)
    # Stable per notification, so a mail client threads a resend with its first copy.
    mail["Message-ID"] = make_msgid(idstring=n.id.replace("@", "-"), domain="tracklane")
    mail["X-Tracklane-Fingerprint"] = n.fingerprint
    mail.set_content(_text(m))
    mail.add_alternative(_html(m), subtype="html")
    return mail


def _text(m: Message) -> str:
    width = max(len(label) for label, _ in m.facts)
    lines = [m.title, "", m.summary, ""]
    lines += [f"{label.ljust(width)}  {value}" for label, value in m.facts]
    lines += [""] + [f"{label}: {url}" for label, url in m.links]
    return "\n".join(lines).rstrip() + "\n"


def _html(m: Message) -> str:
    colour = "#b42318" if m.firing else "#067647"
    rows = "".join(f"<tr><th align=\"left\">{html.escape(label)}</th>"
                   f"<td>{html.escape(value)}</td></tr>" for label, value in m.facts)
    links = " | ".join(f"<a href=\"{html.escape(url, quote=True)}\">{html.escape(label)}</a>"
                       for label, url in m.links)
    return (f"<html><body><h2 style=\"color:{colour}\">{html.escape(m.title)}</h2>"
            f"<p>{html.escape(m.summary)}</p><table>{rows}</table>"
            f"<p>{links}</p></body></html>")


async def send_email(spec: NotifierSpec, n: Notification, timeout_s: float) -> None:
    """Send ``n``; raises aiosmtplib's errors (the caller turns them into NotifyError)."""
    smtp = spec.email
    assert smtp is not None
    context = ssl.create_default_context(cafile=smtp.ca_file)
    await aiosmtplib.send(
        email_message(spec, smtp, n), hostname=smtp.host, port=smtp.effective_port,
        username=smtp.username, password=smtp.password, timeout=timeout_s,
        use_tls=smtp.security == "tls", start_tls=smtp.security == "starttls",
        tls_context=context if smtp.security != "none" else None,
        recipients=list(smtp.to), sender=smtp.sender)
