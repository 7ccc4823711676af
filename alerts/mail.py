"""The email notifier: a plain-text and an HTML part, sent over SMTP with aiosmtplib.

STARTTLS (port 587) or TLS from the first byte (465), a login when configured, and every
recipient in one message. The server's certificate is checked against the system's trust
store, or the notifier's ``ca_file``.
"""

from __future__ import annotations

import html
import ssl
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import aiosmtplib

from tracklane.alerts.messages import Message, message
from tracklane.alerts.model import Notification
from tracklane.alerts.rules import NotifierSpec, SmtpSpec


def email_message(spec: NotifierSpec, smtp: SmtpSpec, n: Notification) -> EmailMessage:
    m = message(n, spec.locale)
    mail = compose(smtp, m.title, _text(m), _html(m), n.id, n.ends_at or n.starts_at)
    mail["X-Tracklane-Fingerprint"] = n.fingerprint
    return mail


def compose(smtp: SmtpSpec, subject: str, text: str, page: str, message_id: str,
            at: datetime) -> EmailMessage:
    """A message with a plain-text and an HTML part; ``message_id`` stable per
    notification or report, so a mail client threads a resend with its first copy."""
    mail = EmailMessage()
    mail["Subject"] = subject
    mail["From"] = smtp.sender
    mail["To"] = ", ".join(smtp.to)
    mail["Date"] = format_datetime(at)
    mail["Message-ID"] = make_msgid(idstring=message_id.replace("@", "-"), domain="tracklane")
    mail.set_content(text)
    mail.add_alternative(page, subtype="html")
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


async def send_mail(spec: NotifierSpec, mail: EmailMessage, timeout_s: float) -> None:
    smtp = spec.email
    assert smtp is not None
    context = ssl.create_default_context(cafile=smtp.ca_file)
    await aiosmtplib.send(
        mail, hostname=smtp.host, port=smtp.effective_port,
        username=smtp.username, password=smtp.password, timeout=timeout_s,
        use_tls=smtp.security == "tls", start_tls=smtp.security == "starttls",
        tls_context=context if smtp.security != "none" else None,
        recipients=list(smtp.to), sender=smtp.sender)
