"""A real HTTP SMS gateway for tests: a tiny asyncio HTTP/1.1 server on 127.0.0.1.

    async with sms_gateway(secret="s3cret") as gateway:
        client = make_client(sms=WebhookSms(gateway.url, "s3cret"))
        ...
        [text] = await gateway.wait_for(1)     # Received(to=..., body=..., signed=True)

Every POST is recorded with its parsed JSON and whether its ``X-Authql-Signature:
sha256=<hex hmac of the body>`` header verifies with the gateway's secret. A forged or
missing signature is answered 401 (and recorded as unsigned); ``fail_next(n)`` makes the
next ``n`` requests answer 503 (``status=`` to choose another). Only ``received`` lists
the texts the gateway accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Received:
    """One POST the gateway saw."""

    path: str
    headers: dict[str, str]
    raw: bytes
    payload: Any
    signed: bool
    status: int

    @property
    def to(self) -> str:
        return str(self.payload["to"])

    @property
    def body(self) -> str:
        return str(self.payload["body"])


@dataclass
class SmsGateway:
    """The running gateway."""

    host: str
    port: int
    secret: bytes
    requests: list[Received] = field(default_factory=list)
    _failures: list[int] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/sms"

    @property
    def received(self) -> list[Received]:
        """The texts the gateway accepted (signed, answered 200)."""
        return [request for request in self.requests if request.status == 200]

    def fail_next(self, count: int, *, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status`` instead of accepting them."""
        self._failures.extend([status] * count)

    def signature_ok(self, raw: bytes, header: str | None) -> bool:
        expected = "sha256=" + hmac.new(self.secret, raw, hashlib.sha256).hexdigest()
        return header is not None and hmac.compare_digest(header, expected)

    async def wait_for(self, count: int, *, within: float = 5) -> list[Received]:
        """The accepted texts once at least ``count`` arrived (TimeoutError after
        ``within`` seconds)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.received) >= count)
        return self.received

    async def wait_for_requests(self, count: int, *, within: float = 5) -> list[Received]:
        """Every request (accepted or not) once at least ``count`` came in."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").split()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            method, path = [*request_line, "", ""][:2]
            status = await self._answer(method, path, headers, raw)
            reason = {200: "OK", 401: "Unauthorized", 405: "Method Not Allowed"}.get(
                status, "Error"
            )
            body = json.dumps({"ok": status == 200}).encode()
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> int:
        if method != "POST":
            return 405
        signed = self.signature_ok(raw, headers.get("x-authql-signature"))
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if self._failures:
            status = self._failures.pop(0)
        elif not signed or not isinstance(payload, dict):
            status = 401
        else:
            status = 200
        async with self._changed:
            self.requests.append(Received(path, headers, raw, payload, signed, status))
            self._changed.notify_all()
        return status


@asynccontextmanager
async def sms_gateway(*, secret: str) -> AsyncIterator[SmsGateway]:
    """Run the gateway on a free port of 127.0.0.1 for the duration of the block."""
    gateway = SmsGateway(host="127.0.0.1", port=0, secret=secret.encode())
    server = await asyncio.start_server(gateway._serve, gateway.host, 0)
    gateway.port = server.sockets[0].getsockname()[1]
    try:
        yield gateway
    finally:
        server.close()
        await server.wait_closed()
