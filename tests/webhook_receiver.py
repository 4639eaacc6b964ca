"""A real webhook receiver for tests: a tiny asyncio HTTP/1.1 server on 127.0.0.1.

    async with webhook_receiver() as receiver:
        receiver.fail_next(2)                      # two 503s, then 200s
        ...
        [hit] = await receiver.wait_for(1)         # the first accepted POST

Every request is recorded with its raw body, parsed JSON and headers; whether a signature
verifies is checked independently (``Hit.signature_valid(secret)``: HMAC-SHA256 of the raw
body, as a receiver written for node-auth does). ``fail_next(n, status=...)`` answers the
next ``n`` requests with an error, ``redirect_next(n)`` with a 302 to ``/elsewhere`` (which
would accept), ``stall_next(n, seconds)`` answers only after a delay (to trip timeouts).
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
class Hit:
    """One request the receiver saw, and how it answered."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    status: int
    #: Answered only after a delay (the sender may have given up by then).
    stalled: bool = False

    @property
    def payload(self) -> Any:
        return json.loads(self.raw)

    @property
    def delivery_id(self) -> str:
        return self.headers.get("x-webhook-delivery", "")

    def signature_valid(self, secret: str) -> bool:
        """Verify ``X-Webhook-Signature`` the way a receiver would: HMAC of the raw body."""
        expected = "sha256=" + hmac.new(secret.encode(), self.raw, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-webhook-signature", ""), expected)


@dataclass
class WebhookReceiver:
    """The running receiver."""

    host: str
    port: int
    hits: list[Hit] = field(default_factory=list)
    _plan: list[tuple[str, float]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _handlers: set[asyncio.Task[Any]] = field(default_factory=set)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    @property
    def accepted(self) -> list[Hit]:
        """POSTs answered 200 without delay."""
        return [hit for hit in self.hits if hit.status == 200 and not hit.stalled]

    def fail_next(self, count: int, *, status: int = 503) -> None:
        self._plan.extend([("status", float(status))] * count)

    def redirect_next(self, count: int) -> None:
        self._plan.extend([("redirect", 0.0)] * count)

    def stall_next(self, count: int, seconds: float) -> None:
        self._plan.extend([("stall", seconds)] * count)

    async def wait_for(self, count: int, *, within: float = 5) -> list[Hit]:
        """The accepted POSTs once at least ``count`` arrived (TimeoutError otherwise)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.accepted) >= count)
        return self.accepted

    async def wait_for_hits(self, count: int, *, within: float = 5) -> list[Hit]:
        """Every request (answered any way) once at least ``count`` came in."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.hits) >= count)
        return list(self.hits)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            request_line = (await reader.readline()).decode("latin-1").split()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            method, path = [*request_line, "", ""][:2]
            status, extra, stall = self._answer(method, path)
            async with self._changed:
                self.hits.append(Hit(method, path, headers, raw, status, stalled=stall > 0))
                self._changed.notify_all()
            if stall:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=stall)
            body = json.dumps({"ok": status == 200}).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, method: str, path: str) -> tuple[int, str, float]:
        """(status, extra header lines, seconds to stall before answering)."""
        if method != "POST":
            return 405, "", 0.0
        if path == "/elsewhere":
            return 200, "", 0.0
        kind, value = self._plan.pop(0) if self._plan else ("ok", 0.0)
        if kind == "status":
            return int(value), "", 0.0
        if kind == "redirect":
            return 302, f"location: http://{self.host}:{self.port}/elsewhere\r\n", 0.0
        return 200, "", value if kind == "stall" else 0.0


@asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """Run a receiver on a free port of 127.0.0.1 for the duration of the block."""
    receiver = WebhookReceiver(host="127.0.0.1", port=0)
    server = await asyncio.start_server(receiver._serve, receiver.host, 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        receiver._closing.set()  # ends stalls at once
        if receiver._handlers:
            await asyncio.wait(list(receiver._handlers), timeout=5)
        await server.wait_closed()


async def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (a receiver that is down)."""
    server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port
