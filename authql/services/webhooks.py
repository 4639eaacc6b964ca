"""Outgoing webhooks: outbox rows written with each event, sent by a background worker.

Why an outbox: the delivery rows are inserted by ``enqueue`` inside the very transaction
that stores the AuthEvent (an EventBus persist hook), so an event and what it owes to
receivers commit together or not at all, and a restart loses nothing: the worker of any
process picks up whatever is still pending.

Delivery is at-least-once. A row is *claimed* with a conditional UPDATE that sets
``locked_until`` (a lease longer than one attempt can take), so several workers, in one
process or many, never send the same row at the same time; the attempt's outcome is then
written back conditioned on ``attempts`` (an optimistic version). Only a process that dies
mid-request can cause a resend, after its lease runs out; receivers dedupe on
``X-Webhook-Delivery``. Rows are not ordered per webhook.

Wire format (node-auth's ``WebhookSender``): a JSON POST with ``X-Webhook-Event`` (dotted
name), ``X-Webhook-Delivery`` (our delivery id, stable across retries, unlike node-auth's
per-try uuid), ``X-Webhook-Timestamp`` (the event's ISO time) and, when the webhook has a
secret, ``X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the raw body bytes>``, exactly as
node-auth signs (the body only, not the timestamp). Redirects are never followed (a 3xx is a
failed attempt). Failed attempts are retried after ``webhook_backoff * 2**(n-1)`` seconds
(capped at an hour) until ``webhook_attempts`` tries were made.

Signing secrets must be recovered to sign, so they are stored encrypted (AES-GCM under a key
derived from the server secret with its own HKDF label), never as plain text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from authql.models import User, Webhook, WebhookAttempt, WebhookDelivery
from authql.services.clock import Clock
from authql.services.event_names import DOTTED_NAMES
from authql.services.events import AuthEvent, EventBus
from authql.services.metrics import Metrics
from authql.settings import Settings

logger = logging.getLogger("authql.webhooks")

#: Seconds the active-webhook list is reused by ``enqueue`` (changes made in this process
#: invalidate it at once; other processes' changes are seen within this window).
CACHE_SECONDS = 2.0
#: Longest wait between retries, whatever the configured base.
MAX_BACKOFF_SECONDS = 3600.0
#: Extra lease beyond the request timeout, so a claim outlives any single attempt.
LEASE_MARGIN_SECONDS = 30.0
#: Rows claimed (and sent concurrently) per worker pass.
BATCH_SIZE = 20
#: Longest a graceful stop waits for in-flight requests before cancelling them.
STOP_GRACE_SECONDS = 5.0
#: Webhook payload schema version (node-auth's ``version``).
PAYLOAD_VERSION = "1"

PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"


def sign(body: bytes, secret: str) -> str:
    """The ``X-Webhook-Signature`` value for ``body``: node-auth's ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON like ``JSON.stringify``."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def iso_timestamp(moment: dt.datetime) -> str:
    """``moment`` as JavaScript's ``toISOString`` writes it (UTC, milliseconds, ``Z``)."""
    utc = moment.astimezone(dt.UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_payload(event: AuthEvent, name: str, tenant_id: str | None) -> dict[str, Any]:
    """The JSON body for ``event``: authql's fields plus node-auth's ``event``/``version``/
    ``metadata``, so receivers written for either read it. Never carries a secret (event
    detail refuses secret-looking keys before it gets here)."""
    return {
        "id": event.id,
        "type": name,
        "event": name,
        "version": PAYLOAD_VERSION,
        "timestamp": iso_timestamp(event.at),
        "userId": event.user_id,
        "sessionId": event.session_id,
        "tenantId": tenant_id,
        "data": {
            "success": event.success,
            "ip": event.ip_address,
            "userAgent": event.user_agent,
            "detail": dict(event.detail),
        },
        "metadata": {
            "userId": event.user_id,
            "sessionId": event.session_id,
            "tenantId": tenant_id,
        },
    }


class SecretBox:
    """AES-GCM for webhook signing secrets (own HKDF label: never the TOTP key)."""

    def __init__(self, secret_key: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"authql webhook secrets"
        ).derive(secret_key.encode())
        self._aead = AESGCM(key)

    def seal(self, secret: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), b"webhook")
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, blob: str) -> str:
        """The secret; raises ``InvalidTag`` when the server secret changed."""
        raw = base64.urlsafe_b64decode(blob.encode())
        return self._aead.decrypt(raw[:12], raw[12:], b"webhook").decode()


@dataclass(frozen=True)
class _Target:
    """What ``enqueue`` needs to know about an active webhook."""

    id: uuid.UUID
    events: frozenset[str]
    tenant_id: str | None

    def wants(self, name: str) -> bool:
        return not self.events or "*" in self.events or name in self.events


class WebhookDispatcher:
    """Writes outbox rows for matching webhooks and delivers them with retries."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        metrics: Metrics | None = None,
        events: EventBus | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.attempts = max(1, settings.webhook_attempts)
        self.backoff = max(0.0, settings.webhook_backoff)
        self.timeout = settings.webhook_timeout
        #: Seconds between polls when nothing wakes the worker (tests shorten it).
        self.poll_interval = poll_interval
        #: Seconds ``stop`` lets in-flight requests finish before cancelling them.
        self.stop_grace = STOP_GRACE_SECONDS
        self.clock = clock
        self.metrics = metrics
        self._box = SecretBox(settings.secret_key)
        self._cache: tuple[float, list[_Target]] | None = None
        self._wake = asyncio.Event()
        self._owed_wake = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        if events is not None:
            events.add_listener(self._after_publish)

    # --- secrets ------------------------------------------------------------------------

    def seal(self, secret: str) -> str:
        """The stored (encrypted) form of a signing secret."""
        return self._box.seal(secret)

    # --- outbox -------------------------------------------------------------------------

    def invalidate(self) -> None:
        """Forget the cached webhook list (after a create, update or delete)."""
        self._cache = None

    async def _targets(self, *, fresh: bool = False) -> list[_Target]:
        now = time.monotonic()
        if not fresh and self._cache is not None and now - self._cache[0] < CACHE_SECONDS:
            return self._cache[1]
        rows = await Webhook.filter(is_active=True).values_list("id", "events", "tenant_id")
        targets = [
            _Target(id=row_id, events=frozenset(events or ()), tenant_id=tenant_id)
            for row_id, events, tenant_id in rows
        ]
        self._cache = (now, targets)
        return targets

    async def enqueue(self, event: AuthEvent) -> None:
        """Persist hook: one outbox row per active webhook whose filter matches ``event``."""
        name = DOTTED_NAMES[event.type]
        if not await self._matching(name):
            return
        tenant_keys = await _tenant_keys(event.user_id)
        payload = event_payload(event, name, tenant_keys[0] if tenant_keys else None)
        await self._owe(event.id, name, payload, tenant_keys)

    async def enqueue_tracked(
        self,
        name: str,
        *,
        event_id: str,
        at: dt.datetime,
        data: Any = None,
        user_id: str | None = None,
        tenant_id: str | None = None,
        session_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Outbox rows for an application event (node-auth's ``/tools/track`` fires
        webhooks too). Call it inside the transaction storing the TrackedEvent, then
        ``wake()`` once that committed. Webhooks filtering on ``*`` (or nothing) get every
        tracked name; others only names they list."""
        if not await self._matching(name):
            return
        tenant_keys = (tenant_id,) if tenant_id else await _tenant_keys(user_id)
        tenant = tenant_keys[0] if tenant_keys else None
        meta = {"userId": user_id, "sessionId": session_id, "tenantId": tenant}
        payload = {
            "id": event_id,
            "type": name,
            "event": name,
            "version": PAYLOAD_VERSION,
            "timestamp": iso_timestamp(at),
            **meta,
            "data": data,
            "metadata": {**meta, "correlationId": correlation_id},
        }
        await self._owe(event_id, name, payload, tenant_keys)

    async def _matching(self, name: str, *, fresh: bool = False) -> list[_Target]:
        return [target for target in await self._targets(fresh=fresh) if target.wants(name)]

    async def _owe(
        self, event_id: str, name: str, payload: dict[str, Any], tenant_keys: tuple[str, ...]
    ) -> None:
        try:
            await self._insert(event_id, name, payload, await self._matching(name), tenant_keys)
        except IntegrityError:
            # A webhook deleted by another process while our list was cached: re-read it.
            self.invalidate()
            targets = await self._matching(name, fresh=True)
            await self._insert(event_id, name, payload, targets, tenant_keys)

    async def _insert(
        self,
        event_id: str,
        name: str,
        payload: dict[str, Any],
        targets: list[_Target],
        tenant_keys: tuple[str, ...],
    ) -> None:
        now = self.clock.now()
        rows = [
            WebhookDelivery(
                webhook_id=target.id,
                event_id=event_id,
                event_type=name,
                payload=payload,
                next_attempt_at=now,
            )
            for target in targets
            if target.tenant_id is None or target.tenant_id in tenant_keys
        ]
        if not rows:
            return
        async with in_transaction():  # a savepoint: a failed insert leaves the event intact
            await WebhookDelivery.bulk_create(rows)
        self._owed_wake = True

    def _after_publish(self, event: AuthEvent) -> None:
        """Bus listener (runs after the event's transaction committed): wake the worker
        if this process just wrote outbox rows."""
        if self._owed_wake:
            self._owed_wake = False
            self._wake.set()

    def wake(self) -> None:
        """Make the worker look for due rows now."""
        self._wake.set()

    # --- worker -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the delivery worker."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="authql-webhooks")

    async def stop(self) -> None:
        """Stop the delivery worker; undelivered rows stay in the outbox."""
        task, self._task = self._task, None
        self._stopping = True
        self._wake.set()
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=self.stop_grace)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                handled = await self.run_once()
                delay = 0.0 if handled else await self._idle_delay()
            except Exception:
                logger.exception("webhook worker pass failed")
                delay = self.poll_interval
            if self._stopping:
                break
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _idle_delay(self) -> float:
        """Seconds until the earliest pending row may be tried (at most one poll)."""
        rows = (
            await WebhookDelivery.filter(status=PENDING)
            .order_by("next_attempt_at")
            .limit(BATCH_SIZE)
            .values_list("next_attempt_at", "locked_until")
        )
        now = self.clock.now()
        delay = self.poll_interval
        for next_at, locked in rows:
            due = max(next_at, locked) if locked is not None else next_at
            delay = min(delay, (due - now).total_seconds())
        # Never spin: a row due "now" that could not be claimed is retried shortly.
        return max(delay, 0.01)

    async def run_once(self) -> int:
        """Claim the rows due now and attempt each once; how many were attempted."""
        now = self.clock.now()
        due = (
            await WebhookDelivery.filter(status=PENDING, next_attempt_at__lte=now)
            .filter(Q(locked_until=None) | Q(locked_until__lte=now))
            .order_by("next_attempt_at")
            .limit(BATCH_SIZE)
            .values_list("id", flat=True)
        )
        lease = now + dt.timedelta(seconds=self.timeout + LEASE_MARGIN_SECONDS)
        claimed = [row_id for row_id in due if await self._claim(row_id, now, lease)]
        if claimed:
            await asyncio.gather(*(self._attempt(row_id) for row_id in claimed))
        return len(claimed)

    @staticmethod
    async def _claim(row_id: uuid.UUID, now: dt.datetime, lease: dt.datetime) -> bool:
        """Take the row if nobody holds it: only one of racing workers updates it."""
        updated = (
            await WebhookDelivery.filter(id=row_id, status=PENDING, next_attempt_at__lte=now)
            .filter(Q(locked_until=None) | Q(locked_until__lte=now))
            .update(locked_until=lease)
        )
        return updated == 1

    async def _attempt(self, row_id: uuid.UUID) -> None:
        """One try of a claimed row; never raises (except cancellation at shutdown)."""
        row = await WebhookDelivery.get_or_none(id=row_id).select_related("webhook")
        if row is None:  # deleted with its webhook meanwhile
            return
        version = row.attempts
        try:
            if not row.webhook.is_active:
                await self._cancel(row, version)
                return
            await self._send(row, version)
        except asyncio.CancelledError:
            # Shutdown mid-request: give the row back so the next worker retries it soon.
            await WebhookDelivery.filter(id=row.id, attempts=version).update(locked_until=None)
            raise
        except Exception:
            logger.exception("webhook delivery %s failed unexpectedly", row.id)

    async def _send(self, row: WebhookDelivery, version: int) -> None:
        webhook = row.webhook
        body = encode_body(row.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "authql-webhooks",
            "X-Webhook-Event": row.event_type,
            "X-Webhook-Delivery": str(row.id),
            "X-Webhook-Timestamp": str(row.payload.get("timestamp") or ""),
        }
        status_code: int | None = None
        error: str | None = None
        started = time.perf_counter()
        try:
            if webhook.secret_encrypted:
                headers["X-Webhook-Signature"] = sign(
                    body, self._box.open(webhook.secret_encrypted)
                )
            status_code = await self._post(webhook.url, body, headers)
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
                if 300 <= status_code < 400:
                    error += " (redirects are not followed)"
        except InvalidTag:
            error = "signing secret unreadable (server secret changed?)"
            logger.error("webhook %s: cannot decrypt its signing secret", webhook.id)
        except TimeoutError:
            error = f"timed out after {self.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        duration_ms = int((time.perf_counter() - started) * 1000)
        await self._record(row, version, status_code, error, duration_ms)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=self.timeout)
        async with (
            asyncio.timeout(self.timeout),
            self._client.stream("POST", url, content=body, headers=headers) as response,
        ):
            return response.status_code

    async def _record(
        self,
        row: WebhookDelivery,
        version: int,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
    ) -> None:
        """Log the attempt and move the row on: succeeded, failed, or due again later."""
        now = self.clock.now()
        success = error is None
        attempts = version + 1
        changes: dict[str, Any] = {
            "attempts": attempts,
            "locked_until": None,
            "last_status_code": status_code,
            "last_error": error,
        }
        if success:
            changes.update(status=SUCCEEDED, completed_at=now)
        elif attempts >= self.attempts:
            changes.update(status=FAILED, completed_at=now)
        else:
            changes["next_attempt_at"] = now + dt.timedelta(seconds=self.backoff_for(attempts))
        try:
            updated = await self._write_attempt(
                row, version, changes, status_code, error, duration_ms
            )
        except IntegrityError:  # the webhook was deleted while we were sending
            logger.info("webhook delivery %s vanished during an attempt", row.id)
            return
        if not updated:
            logger.warning("webhook delivery %s was taken over during an attempt", row.id)
        if self.metrics is not None:
            self.metrics.record_webhook_attempt(success)
            if updated and changes.get("status") in (SUCCEEDED, FAILED):
                self.metrics.record_webhook_delivery(changes["status"])
        if not success:
            logger.info("webhook delivery %s attempt %d failed: %s", row.id, attempts, error)

    async def _write_attempt(
        self,
        row: WebhookDelivery,
        version: int,
        changes: dict[str, Any],
        status_code: int | None,
        error: str | None,
        duration_ms: int,
    ) -> int:
        async with in_transaction():
            await WebhookAttempt.create(
                delivery_id=row.id,
                at=self.clock.now(),
                status_code=status_code,
                error=error,
                duration_ms=duration_ms,
                success=error is None,
            )
            return await WebhookDelivery.filter(id=row.id, attempts=version).update(**changes)

    async def _cancel(self, row: WebhookDelivery, version: int) -> None:
        """A row owed to a webhook disabled since: closed without sending (not counted in
        the delivery metric, whose outcomes are succeeded and failed)."""
        await WebhookDelivery.filter(id=row.id, attempts=version).update(
            status=CANCELLED,
            locked_until=None,
            last_error="webhook disabled",
            completed_at=self.clock.now(),
        )

    def backoff_for(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed try."""
        return float(
            min(self.backoff * 2 ** (attempts - 1), max(self.backoff, MAX_BACKOFF_SECONDS))
        )


async def _tenant_keys(user_id: str | None) -> tuple[str, ...]:
    """The tenant of ``user_id`` as (id, slug), or () for no user or a user without one."""
    if not user_id:
        return ()
    try:
        ident = uuid.UUID(str(user_id))
    except ValueError:
        return ()
    rows = await User.filter(id=ident, tenant_id__not_isnull=True).values_list(
        "tenant_id", "tenant__slug"
    )
    if not rows:
        return ()
    tenant_id, slug = rows[0]
    return (str(tenant_id), slug) if slug else (str(tenant_id),)
