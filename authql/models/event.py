"""The audit log: every AuthEvent, persisted before it is fanned out."""

from __future__ import annotations

import uuid

from tortoise import fields
from tortoise.models import Model


class AuthEventRecord(Model):
    """One auth event. ``user_id`` is a plain column, not a foreign key, so the audit trail
    outlives a purged account; ``detail`` never holds a secret."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    type = fields.CharField(max_length=40, db_index=True)
    at = fields.DatetimeField(db_index=True)
    user_id = fields.UUIDField(null=True, db_index=True)
    session_id = fields.UUIDField(null=True)
    ip_address = fields.CharField(max_length=64, null=True)
    user_agent = fields.CharField(max_length=512, null=True)
    success = fields.BooleanField(default=True)
    detail: dict[str, object] = fields.JSONField(default=dict)  # type: ignore[assignment]

    class Meta:
        table = "auth_events"
        table_description = "Audit log of auth events"
