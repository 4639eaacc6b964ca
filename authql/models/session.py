"""Sessions and their refresh-token families."""

from __future__ import annotations

import uuid

from tortoise import fields
from tortoise.models import Model


class Session(Model):
    """One sign-in. Every transport (JWT ``sid``, cookies) points at a row here.

    A session is the refresh-token family: presenting a used refresh token revokes the whole
    session. ``expires_at`` is the absolute lifetime; ``revoked_at`` ends it at once.
    """

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    user = fields.ForeignKeyField("models.User", related_name="sessions", on_delete=fields.CASCADE)
    method = fields.CharField(max_length=64)
    ip_address = fields.CharField(max_length=64, null=True)
    user_agent = fields.CharField(max_length=512, null=True)
    remember = fields.BooleanField(default=False)
    created_at = fields.DatetimeField()
    last_seen_at = fields.DatetimeField()
    expires_at = fields.DatetimeField(db_index=True)
    revoked_at = fields.DatetimeField(null=True)
    #: Digest of the opaque session token that cookie-session dialects carry (else null).
    token_digest = fields.CharField(max_length=64, null=True, unique=True)

    user_id: uuid.UUID

    class Meta:
        table = "sessions"
        table_description = "Sign-in sessions (refresh-token families)"


class RefreshToken(Model):
    """An opaque refresh token, stored as its SHA-256 digest; single use (``used_at``)."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    session = fields.ForeignKeyField(
        "models.Session", related_name="refresh_tokens", on_delete=fields.CASCADE
    )
    digest = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)

    session_id: uuid.UUID

    class Meta:
        table = "refresh_tokens"
        table_description = "Refresh tokens stored as digests"
