"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, on the test's own event loop.

    async with smtp_server() as smtp:                     # or smtp_server(username=, password=)
        client = make_client(mailer=smtp.mailer())        # a real SmtpMailer pointed at it
        ...
        [message] = await smtp.wait_for(1)                # parsed email.message.EmailMessage
        token = extract_token(message)

Messages are parsed with ``email.policy.default``, so ``message.get_body(("plain",))`` and
``message["From"]`` work as usual. With credentials the server offers AUTH without TLS
(``auth_require_tls=False``) and refuses MAIL FROM until the client authenticated; a wrong
password gets ``535`` (the authenticator answers ``AuthResult(handled=False)``, otherwise
aiosmtpd sends no reply and the client hangs). The ``extract_*`` helpers accept a parsed
mail, one of ``MemoryMailer``'s ``MailMessage``s, an ``SmsMessage`` or a plain string.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from authql.services.mail import SmtpMailer

MAIL_FROM = "authql <no-reply@localhost>"
_TOKEN = re.compile(r"[?&]token=([A-Za-z0-9_\-]+)")
_LINK = re.compile(r"https?://[^\s\"'<>]+[?&]token=[A-Za-z0-9_\-]+")
_CODE = re.compile(r"(?<!\d)(\d{6})(?!\d)")


@dataclass
class SmtpServer:
    """The running server: what it received and how to reach it."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, *, username: str | None = None, password: str | None = None) -> str:
        """``smtp://[user:pass@]127.0.0.1:<port>?starttls=false`` (credentials default to
        the server's own)."""
        username = self.username if username is None else username
        password = self.password if password is None else password
        credentials = ""
        if username is not None:
            credentials = f"{quote(username, safe='')}:{quote(password or '', safe='')}@"
        return f"smtp://{credentials}{self.host}:{self.port}?starttls=false"

    def mailer(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        sender: str = MAIL_FROM,
        timeout: float = 5,
    ) -> SmtpMailer:
        """A real SmtpMailer that delivers here."""
        return SmtpMailer(
            self.url(username=username, password=password), sender=sender, timeout=timeout
        )

    def to(self, address: str) -> list[EmailMessage]:
        """Messages whose envelope named ``address`` as a recipient."""
        return [
            message
            for message, envelope in zip(self.messages, self.envelopes, strict=True)
            if address in envelope.rcpt_tos
        ]

    async def wait_for(self, count: int, *, within: float = 5) -> list[EmailMessage]:
        """All messages once at least ``count`` arrived (TimeoutError after ``within`` seconds)."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.messages) >= count)
        return list(self.messages)

    # --- aiosmtpd hooks ---------------------------------------------------------------------

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.username is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        async with self._arrived:
            self.envelopes.append(envelope)
            self.messages.append(message)
            self._arrived.notify_all()
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.username is not None
            and data.login.decode() == self.username
            and data.password.decode() == self.password
        )
        login = data.login.decode(errors="replace") if isinstance(data, LoginPassword) else ""
        self.logins.append((login, ok))
        return AuthResult(success=ok, handled=False)


@asynccontextmanager
async def smtp_server(
    *, username: str | None = None, password: str | None = None
) -> AsyncIterator[SmtpServer]:
    """Run aiosmtpd on a free port of 127.0.0.1 for the duration of the block.

    With ``username`` the server requires AUTH (PLAIN or LOGIN, no TLS) with exactly these
    credentials before it accepts a mail."""
    loop = asyncio.get_running_loop()
    state = SmtpServer(host="127.0.0.1", port=0, username=username, password=password)

    def protocol() -> SMTP:
        return SMTP(
            state,
            hostname="127.0.0.1",
            loop=loop,
            authenticator=state.authenticate if username is not None else None,
            auth_require_tls=False,
        )

    server = await loop.create_server(protocol, state.host, 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- reading messages ------------------------------------------------------------------------


def text_of(message: object) -> str:
    """The plain-text content of a parsed mail (line ends as ``\\n``), a MailMessage, an
    SmsMessage or a string."""
    if isinstance(message, str):
        return message
    if isinstance(message, EmailMessage):
        part = message.get_body(("plain",))
        assert part is not None, "the mail has no text/plain part"
        return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]
    for attribute in ("text", "body"):
        value = getattr(message, attribute, None)
        if isinstance(value, str):
            return value
    raise TypeError(f"cannot read text from {type(message).__name__}")


def html_of(message: object) -> str:
    """The HTML content of a parsed mail or a MailMessage."""
    if isinstance(message, EmailMessage):
        part = message.get_body(("html",))
        assert part is not None, "the mail has no text/html part"
        return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]
    value = getattr(message, "html", None)
    if isinstance(value, str):
        return value
    raise TypeError(f"cannot read HTML from {type(message).__name__}")


def extract_link(message: object) -> str:
    """The first URL carrying a ``token=`` parameter in the message's text."""
    match = _LINK.search(text_of(message))
    assert match is not None, f"no token link in: {text_of(message)!r}"
    return match.group(0)


def extract_token(message: object) -> str:
    """The ``token=`` value of the message's link."""
    match = _TOKEN.search(extract_link(message))
    assert match is not None
    return match.group(1)


def extract_code(message: object) -> str:
    """The first six-digit code in the message's text."""
    match = _CODE.search(text_of(message))
    assert match is not None, f"no 6-digit code in: {text_of(message)!r}"
    return match.group(1)
