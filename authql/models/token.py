"""One-time tokens and codes: emailed links, SMS and email codes, reset and change tokens."""

from __future__ import annotations

import uuid

from tortoise import fields
from tortoise.models import Model


class OneTimeToken(Model):
    """A single-use secret bound to one user and one purpose, stored only as a digest.

    Link tokens are 256-bit and looked up by digest; short codes are digested together with
    their purpose and user (HMAC keyed by the server secret), so the same six digits for two
    users never collide and a code cannot be replayed for another purpose. ``attempts``
    counts wrong guesses at a code; ``data`` carries non-secret context (the new email of an
    email change, the phone of an SMS code, a validated return URL).
    """

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    user = fields.ForeignKeyField(
        "models.User", related_name="one_time_tokens", on_delete=fields.CASCADE
    )
    purpose = fields.CharField(max_length=32)
    digest = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField(db_index=True)
    used_at = fields.DatetimeField(null=True)
    attempts = fields.IntField(default=0)
    data: dict[str, object] = fields.JSONField(default=dict)  # type: ignore[assignment]

    user_id: uuid.UUID

    class Meta:
        table = "one_time_tokens"
        table_description = "Single-use tokens and codes stored as digests"
