"""Sending mail: over SMTP (aiosmtplib), to the console (development), or to memory (tests).

Senders never run inside a database transaction or on the response path: flows hand
messages to the delivery queue (services.delivery), which calls ``send`` in the background.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

logger = logging.getLogger("authql.mail")


@dataclass(frozen=True)
class MailMessage:
    """One mail with a plain-text and an HTML part."""

    to: str
    subject: str
    text: str
    html: str


class Mailer(Protocol):
    """Delivers a MailMessage or raises."""

    async def send(self, message: MailMessage) -> None: ...


def _email(message: MailMessage, sender: str) -> EmailMessage:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.to
    email["Subject"] = message.subject
    email.set_content(message.text)
    email.add_alternative(message.html, subtype="html")
    return email


class SmtpMailer:
    """SMTP through aiosmtplib: ``smtp://`` (plain, or STARTTLS with ``?starttls=true``, or
    when the server offers it), ``smtps://`` (implicit TLS); credentials from the URL."""

    def __init__(self, url: str, *, sender: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("AUTHQL_SMTP_URL must look like smtp://user:pass@host:port")
        query = {key: values[-1].lower() for key, values in parse_qs(parts.query).items()}
        self.hostname = parts.hostname
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.use_tls = parts.scheme == "smtps"
        starttls = query.get("starttls")
        self.start_tls: bool | None = (
            False if self.use_tls else {"true": True, "false": False}.get(starttls or "")
        )
        self.sender = sender
        self.timeout = timeout

    async def send(self, message: MailMessage) -> None:
        await aiosmtplib.send(
            _email(message, self.sender),
            hostname=self.hostname,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            timeout=self.timeout,
        )


class ConsoleMailer:
    """Development default: prints each mail's recipient, subject and text (with its links)."""

    async def send(self, message: MailMessage) -> None:
        sys.stdout.write(
            f"\n--- mail to {message.to}: {message.subject}\n{message.text}\n--- end of mail\n"
        )
        sys.stdout.flush()


class MemoryMailer:
    """Keeps every mail in ``outbox`` (tests)."""

    def __init__(self) -> None:
        self.outbox: list[MailMessage] = []

    async def send(self, message: MailMessage) -> None:
        self.outbox.append(message)
