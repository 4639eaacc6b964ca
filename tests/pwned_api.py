"""A k-anonymity range server on 127.0.0.1 answering like Have I Been Pwned's Pwned
Passwords API, for breached-password tests.

``GET /range/<PREFIX>`` (five hex digits, any case) answers ``text/plain`` lines
``SUFFIX:COUNT`` for the breached passwords whose SHA-1 starts with the prefix; with
``Add-Padding: true`` it adds padding lines with a count of 0, as the real API does, so a
client that counted them as hits would be caught. Anything else is 404 (a bad prefix 400).
``status`` makes every range answer that status (an outage).

    with PwnedApi(["password123"]) as api:
        client = make_client(pwned_passwords_url=api.url)
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable

from tests.github_standin import LocalServer, Reply, Request

_PREFIX = re.compile(r"^/range/([0-9A-Fa-f]{5})$")
PADDING_LINES = 20


def sha1_upper(password: str) -> str:
    return hashlib.sha1(password.encode("utf-8"), usedforsecurity=False).hexdigest().upper()


class PwnedApi(LocalServer):
    """The range API over a set of breached passwords."""

    def __init__(self, breached: Iterable[str] = ()) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self.status: int | None = None
        for password in breached:
            self.add(password)

    def __enter__(self) -> PwnedApi:
        self.start()
        return self

    def add(self, password: str, count: int = 42) -> None:
        """Make ``password`` a breached one, seen ``count`` times."""
        self.counts[sha1_upper(password)] = count

    def handle(self, request: Request) -> Reply:
        if request.method != "GET":
            return Reply.text("Not Found", 404)
        match = _PREFIX.match(request.path)
        if not match:
            return Reply.text("The hash prefix was not in a valid format", 400)
        if self.status is not None:
            return Reply.text("Service unavailable", self.status)
        prefix = match.group(1).upper()
        lines = [
            f"{digest[5:]}:{count}" for digest, count in self.counts.items() if digest[:5] == prefix
        ]
        if request.headers.get("add-padding", "").lower() == "true":
            lines += [f"{secrets.token_hex(18)[:35].upper()}:0" for _ in range(PADDING_LINES)]
        body = "\r\n".join(lines).encode()
        return Reply(200, body, {"content-type": "text/plain"})
