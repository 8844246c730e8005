"""Email delivery: :class:`SMTPMailer` over smtplib, :class:`LogMailer` when no server is set.

Only this module talks SMTP. Both classes implement ``downloader.interfaces.Mailer``.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal

from notify.addresses import check_address
from notify.errors import MailError

log = logging.getLogger(__name__)

Security = Literal["none", "starttls", "ssl"]


def build_message(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    """A plain-text UTF-8 message. Addresses are checked, so no header can be injected."""
    if "\r" in subject or "\n" in subject:
        raise MailError("email subject must be a single line")
    msg = EmailMessage()
    msg["From"] = check_address(sender)
    msg["To"] = check_address(to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg.set_content(body)
    return msg


class SMTPMailer:
    """Sends each message over a fresh SMTP connection (downloads are rare; a pooled
    connection would only go stale between them)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        security: Security = "none",
        user: str = "",
        password: str = "",
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.security = security
        self.user = user
        self.password = password
        self.timeout = timeout

    def send(self, to: str, subject: str, body: str) -> None:
        """Deliver one message or raise :class:`MailError` naming the server and the cause."""
        msg = build_message(self.sender, to, subject, body)
        try:
            with self._connect() as smtp:
                if self.user:
                    smtp.login(self.user, self.password)
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            raise MailError(
                f"could not send mail to {to} via {self.host}:{self.port}: {exc}"
            ) from exc

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        return smtp


class LogMailer:
    """Writes each message to the log instead of sending it (no SMTP server configured)."""

    def __init__(self, *, sender: str = "downloads@localhost") -> None:
        self.sender = sender
        self.sent: list[EmailMessage] = []

    def send(self, to: str, subject: str, body: str) -> None:
        """Log the message (and keep it in ``sent``, which tests read)."""
        msg = build_message(self.sender, to, subject, body)
        self.sent.append(msg)
        log.info("email (no SMTP server configured) to %s: %s\n%s", to, subject, body)
