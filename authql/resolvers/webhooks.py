"""Outgoing webhook administration (role ``admin``): register receivers, read their log.

The node-auth admin router (``/admin/api/webhooks``) and any other surface call these. Event
filters are stored as node-auth dotted names (AuthEventType names are accepted and
translated), ``"*"`` or an empty list meaning every event. A signing secret is write-only:
it is stored encrypted and views only say whether one is set. Every change is written to
the ``authql.audit`` log with the acting admin (there is no auth event type for it).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from authql.context import RequestContext
from authql.errors import NotFound, ValidationFailed
from authql.models import Tenant, Webhook, WebhookAttempt, WebhookDelivery
from authql.services.event_names import DOTTED_NAMES, EVENT_TYPES_BY_NAME
from authql.services.events import AuthEventType

audit = logging.getLogger("authql.audit")

MAX_PAGE = 100
MAX_URL = 2048
MAX_SECRET = 256
_CHANGEABLE = frozenset({"url", "events", "secret", "tenant_id", "is_active"})


@dataclass(frozen=True)
class WebhookView:
    """What an admin sees of a webhook (never its secret)."""

    id: str
    url: str
    events: list[str]
    has_secret: bool
    tenant_id: str | None
    is_active: bool
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, row: Webhook) -> WebhookView:
        return cls(
            id=str(row.id),
            url=row.url,
            events=list(row.events or []),
            has_secret=bool(row.secret_encrypted),
            tenant_id=row.tenant_id,
            is_active=row.is_active,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True)
class AttemptView:
    """One HTTP try of a delivery."""

    at: dt.datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    success: bool


@dataclass(frozen=True)
class DeliveryView:
    """One event owed to a webhook, with every attempt made so far (oldest first)."""

    id: str
    webhook_id: str
    event_id: str | None
    event_type: str
    status: str
    attempts: int
    next_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: dt.datetime
    completed_at: dt.datetime | None
    payload: dict[str, Any]
    attempt_log: list[AttemptView]


def _page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed("Invalid page size.", fields={"limit": f"Between 1 and {MAX_PAGE}."})
    if offset < 0:
        raise ValidationFailed("Invalid offset.", fields={"offset": "Must not be negative."})


def check_url(url: str | None) -> str:
    """An absolute http(s) URL with a host, or VALIDATION_ERROR."""
    value = (url or "").strip()
    problem = None
    if not value or len(value) > MAX_URL:
        problem = f"An http(s) URL of at most {MAX_URL} characters."
    else:
        try:
            parts = urlsplit(value)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            _ = parts.port  # raises for a non-numeric or out-of-range port
        except ValueError:
            valid = False
        if not valid:
            problem = "An absolute http:// or https:// URL."
    if problem:
        raise ValidationFailed("Invalid webhook URL.", fields={"url": problem})
    return value


def check_events(events: list[str] | None) -> list[str]:
    """Event filters as dotted names (``["*"]`` collapses to every event), or
    VALIDATION_ERROR naming the unknown ones."""
    names: list[str] = []
    unknown: list[str] = []
    for raw in events or []:
        item = str(raw).strip()
        if item == "*" or item in EVENT_TYPES_BY_NAME:
            name = item
        elif item.upper() in AuthEventType.__members__:
            name = DOTTED_NAMES[AuthEventType[item.upper()]]
        else:
            unknown.append(item)
            continue
        if name not in names:
            names.append(name)
    if unknown:
        raise ValidationFailed(
            "Unknown event name.", fields={"events": "Unknown: " + ", ".join(unknown[:10])}
        )
    return ["*"] if "*" in names else names


def _check_secret(secret: str | None) -> str | None:
    if secret is None or secret == "":
        return None
    if len(secret) > MAX_SECRET or not secret.strip():
        raise ValidationFailed(
            "Invalid webhook secret.", fields={"secret": f"1 to {MAX_SECRET} characters."}
        )
    return secret


async def _check_tenant(tenant_id: str | None) -> str | None:
    """The tenant's id for an id or slug (None for a global webhook), or VALIDATION_ERROR."""
    if tenant_id is None or not str(tenant_id).strip():
        return None
    key = str(tenant_id).strip()
    query = Q(slug=key)
    with_id = _uuid(key)
    if with_id is not None:
        query |= Q(id=with_id)
    tenant = await Tenant.filter(query).first().values_list("id", flat=True)
    if tenant is None:
        raise ValidationFailed("Unknown tenant.", fields={"tenantId": "No such tenant."})
    return str(tenant)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


async def _row(webhook_id: str) -> Webhook:
    ident = _uuid(webhook_id)
    row = await Webhook.get_or_none(id=ident) if ident else None
    if row is None:
        raise NotFound("Webhook not found.")
    return row


async def create_webhook(
    ctx: RequestContext,
    *,
    url: str,
    events: list[str] | None = None,
    secret: str | None = None,
    tenant_id: str | None = None,
    is_active: bool = True,
) -> WebhookView:
    """Register a receiver; it gets matching events published from now on."""
    admin = ctx.require_admin()
    services = ctx.services
    sealed = _check_secret(secret)
    row = await Webhook.create(
        url=check_url(url),
        events=check_events(events),
        secret_encrypted=services.webhooks.seal(sealed) if sealed else None,
        tenant_id=await _check_tenant(tenant_id),
        is_active=bool(is_active),
    )
    services.webhooks.invalidate()
    audit.info("webhook %s created by %s", row.id, admin.user.id)
    return WebhookView.of(row)


async def list_webhooks(
    ctx: RequestContext, *, limit: int = 20, offset: int = 0
) -> tuple[list[WebhookView], int]:
    """Webhooks newest first, and how many there are."""
    ctx.require_admin()
    _page(limit, offset)
    total = await Webhook.all().count()
    rows = await Webhook.all().order_by("-created_at", "id").offset(offset).limit(limit)
    return [WebhookView.of(row) for row in rows], total


async def get_webhook(ctx: RequestContext, *, webhook_id: str) -> WebhookView:
    """One webhook, or NOT_FOUND."""
    ctx.require_admin()
    return WebhookView.of(await _row(webhook_id))


async def update_webhook(ctx: RequestContext, *, webhook_id: str, **changes: Any) -> WebhookView:
    """Change what is given (url, events, secret, tenant_id, is_active); the rest stays.

    ``secret=None`` or ``""`` removes the secret, ``tenant_id=None`` makes the webhook
    global, ``events=None`` or ``[]`` means every event; ``url``/``is_active`` given as
    None are left unchanged.
    """
    admin = ctx.require_admin()
    unknown = set(changes) - _CHANGEABLE
    if unknown:
        raise ValidationFailed(
            "Unknown webhook field.", fields={name: "Cannot be changed." for name in unknown}
        )
    services = ctx.services
    async with in_transaction():
        row = await _row(webhook_id)
        if changes.get("url") is not None:
            row.url = check_url(changes["url"])
        if "events" in changes:
            row.events = check_events(changes["events"])
        if "secret" in changes:
            secret = _check_secret(changes["secret"])
            row.secret_encrypted = services.webhooks.seal(secret) if secret else None
        if "tenant_id" in changes:
            row.tenant_id = await _check_tenant(changes["tenant_id"])
        if changes.get("is_active") is not None:
            row.is_active = bool(changes["is_active"])
        await row.save()
    services.webhooks.invalidate()
    audit.info("webhook %s updated by %s (%s)", row.id, admin.user.id, ", ".join(sorted(changes)))
    return WebhookView.of(row)


async def delete_webhook(ctx: RequestContext, *, webhook_id: str) -> bool:
    """Remove a webhook with its outbox rows and attempt log; NOT_FOUND if unknown."""
    admin = ctx.require_admin()
    row = await _row(webhook_id)
    await row.delete()
    ctx.services.webhooks.invalidate()
    audit.info("webhook %s deleted by %s", row.id, admin.user.id)
    return True


async def list_deliveries(
    ctx: RequestContext, *, webhook_id: str, limit: int = 20, offset: int = 0
) -> tuple[list[DeliveryView], int]:
    """A webhook's deliveries newest first, each with its attempts, and the total."""
    ctx.require_admin()
    _page(limit, offset)
    row = await _row(webhook_id)
    query = WebhookDelivery.filter(webhook_id=row.id)
    total = await query.count()
    deliveries = await query.order_by("-created_at", "id").offset(offset).limit(limit)
    attempts: dict[uuid.UUID, list[AttemptView]] = {item.id: [] for item in deliveries}
    if deliveries:
        for attempt in await WebhookAttempt.filter(delivery_id__in=list(attempts)).order_by(
            "at", "id"
        ):
            attempts[attempt.delivery_id].append(
                AttemptView(
                    at=attempt.at,
                    status_code=attempt.status_code,
                    error=attempt.error,
                    duration_ms=attempt.duration_ms,
                    success=attempt.success,
                )
            )
    return [
        DeliveryView(
            id=str(item.id),
            webhook_id=str(row.id),
            event_id=str(item.event_id) if item.event_id else None,
            event_type=item.event_type,
            status=item.status,
            attempts=item.attempts,
            next_attempt_at=item.next_attempt_at if item.status == "pending" else None,
            last_status_code=item.last_status_code,
            last_error=item.last_error,
            created_at=item.created_at,
            completed_at=item.completed_at,
            payload=dict(item.payload or {}),
            attempt_log=attempts[item.id],
        )
        for item in deliveries
    ], total
