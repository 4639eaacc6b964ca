"""The account aggregate."""

from __future__ import annotations

import uuid

from tortoise import fields
from tortoise.models import Model


class User(Model):
    """An account. Email and username are unique case-insensitively (stored normalised).

    ``password_hash`` is an argon2id PHC string or null for accounts without a password;
    ``failed_logins``/``locked_until`` drive lockout; ``deleted_at`` marks soft deletion.
    """

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    email = fields.CharField(max_length=320, unique=True)
    email_verified = fields.BooleanField(default=False)
    username = fields.CharField(max_length=64, null=True)
    username_key = fields.CharField(max_length=64, null=True, unique=True)
    name = fields.CharField(max_length=200, null=True)
    first_name = fields.CharField(max_length=100, null=True)
    last_name = fields.CharField(max_length=100, null=True)
    phone = fields.CharField(max_length=32, null=True)
    phone_verified = fields.BooleanField(default=False)
    password_hash = fields.CharField(max_length=255, null=True)
    two_factor_enabled = fields.BooleanField(default=False)
    failed_logins = fields.IntField(default=0)
    locked_until = fields.DatetimeField(null=True)
    last_login_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    deleted_at = fields.DatetimeField(null=True)
    tenant = fields.ForeignKeyField(
        "models.Tenant", related_name="users", null=True, on_delete=fields.SET_NULL
    )
    # Set when registration needs an admin's approval: sign-in waits for it.
    pending_approval = fields.BooleanField(
        default=False, db_default=False, description="Awaiting admin approval"
    )

    tenant_id: uuid.UUID | None

    class Meta:
        table = "users"
        table_description = "Accounts"


class UserRole(Model):
    """A role granted to a user (``admin``, ...). A row per grant so admins can filter by it."""

    id = fields.IntField(primary_key=True)
    user = fields.ForeignKeyField(
        "models.User", related_name="role_grants", on_delete=fields.CASCADE
    )
    role = fields.CharField(max_length=64, db_index=True)

    user_id: uuid.UUID

    class Meta:
        table = "user_roles"
        table_description = "Roles granted to accounts"
        unique_together = (("user", "role"),)
