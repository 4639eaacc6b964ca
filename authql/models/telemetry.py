"""Telemetry outlets that need rows: API keys, outgoing webhooks (a durable outbox with an
attempt log) and custom events tracked by applications through the tools router."""

from __future__ import annotations

import uuid

from tortoise import fields
from tortoise.models import Model


class ApiKey(Model):
    """A machine credential for the tools and admin routers. Only the key's digest is kept:
    the raw key is shown once, at creation. ``prefix`` (the first characters) lets an admin
    tell keys apart in a list without the secret."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    name = fields.CharField(max_length=200)
    prefix = fields.CharField(max_length=16)
    key_digest = fields.CharField(max_length=128, unique=True)
    scopes: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    allowed_ips: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    service_id = fields.CharField(max_length=200, null=True)
    created_by = fields.UUIDField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)
    last_used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "api_keys"
        table_description = "Machine credentials stored as digests"


class Webhook(Model):
    """A registered receiver. ``events`` empty means every event. The signing secret is
    stored encrypted (it must be recovered to sign), never returned after creation."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    url = fields.CharField(max_length=2048)
    events: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    secret_encrypted = fields.TextField(null=True)
    tenant_id = fields.CharField(max_length=64, null=True)
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "webhooks"
        table_description = "Outgoing webhook endpoints"


class WebhookDelivery(Model):
    """One event owed to one webhook: the outbox row. Written when the event is persisted,
    so a restart loses nothing; ``locked_until`` lets one of several processes claim it."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    webhook = fields.ForeignKeyField(
        "models.Webhook", related_name="deliveries", on_delete=fields.CASCADE
    )
    event_id = fields.UUIDField(null=True)
    event_type = fields.CharField(max_length=100)
    payload: dict[str, object] = fields.JSONField(default=dict)  # type: ignore[assignment]
    status = fields.CharField(max_length=16, default="pending", db_index=True)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(db_index=True)
    locked_until = fields.DatetimeField(null=True)
    last_status_code = fields.IntField(null=True)
    last_error = fields.CharField(max_length=500, null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    completed_at = fields.DatetimeField(null=True)

    webhook_id: uuid.UUID

    class Meta:
        table = "webhook_deliveries"
        table_description = "Webhook outbox"


class WebhookAttempt(Model):
    """One HTTP attempt of a delivery, successful or not."""

    id = fields.IntField(primary_key=True)
    delivery = fields.ForeignKeyField(
        "models.WebhookDelivery", related_name="attempt_log", on_delete=fields.CASCADE
    )
    at = fields.DatetimeField()
    status_code = fields.IntField(null=True)
    error = fields.CharField(max_length=500, null=True)
    duration_ms = fields.IntField(default=0)
    success = fields.BooleanField(default=False)

    delivery_id: uuid.UUID

    class Meta:
        table = "webhook_attempts"
        table_description = "Webhook delivery attempts"


class TrackedEvent(Model):
    """An application event posted to ``/tools/track/:eventName`` (not an auth event)."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    name = fields.CharField(max_length=200, db_index=True)
    at = fields.DatetimeField(db_index=True)
    user_id = fields.UUIDField(null=True, db_index=True)
    tenant_id = fields.CharField(max_length=64, null=True)
    session_id = fields.UUIDField(null=True)
    correlation_id = fields.CharField(max_length=200, null=True)
    data: dict[str, object] = fields.JSONField(default=dict)  # type: ignore[assignment]

    class Meta:
        table = "tracked_events"
        table_description = "Application telemetry events"
