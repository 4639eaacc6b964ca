"""Outgoing webhooks: outbox rows written with each event, sent by a background worker."""

from __future__ import annotations

from authql.services.events import AuthEvent


class WebhookDispatcher:
    """Writes outbox rows for matching webhooks and delivers them with retries."""

    async def enqueue(self, event: AuthEvent) -> None:
        """Persist hook: one outbox row per active webhook whose filter matches ``event``."""

    async def start(self) -> None:
        """Start the delivery worker."""

    async def stop(self) -> None:
        """Stop the delivery worker; undelivered rows stay in the outbox."""
