"""Sending SMS: to an HTTP gateway (signed JSON POST), the console, or memory (tests)."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from dataclasses import dataclass
from typing import Protocol

import httpx


@dataclass(frozen=True)
class SmsMessage:
    to: str
    body: str


class SmsSender(Protocol):
    """Delivers an SmsMessage or raises."""

    async def send(self, message: SmsMessage) -> None: ...


class WebhookSms:
    """POSTs ``{"to", "body"}`` to the gateway, signed ``X-Authql-Signature: sha256=<hmac>``
    over the exact body bytes so the gateway can reject forgeries. Non-2xx raises."""

    def __init__(self, url: str, secret: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.secret = secret.encode()
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def send(self, message: SmsMessage) -> None:
        body = json.dumps({"to": message.to, "body": message.body}).encode()
        signature = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if self._client is None:
            # One pooled client: a new one per text would redo TLS setup every time.
            self._client = httpx.AsyncClient(timeout=self.timeout)
        response = await self._client.post(
            self.url,
            content=body,
            headers={
                "content-type": "application/json",
                "x-authql-signature": f"sha256={signature}",
            },
        )
        response.raise_for_status()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class ConsoleSms:
    """Development default: prints each text."""

    async def send(self, message: SmsMessage) -> None:
        sys.stdout.write(f"\n--- sms to {message.to}: {message.body}\n")
        sys.stdout.flush()


class MemorySms:
    """Keeps every text in ``outbox`` (tests)."""

    def __init__(self) -> None:
        self.outbox: list[SmsMessage] = []

    async def send(self, message: SmsMessage) -> None:
        self.outbox.append(message)
