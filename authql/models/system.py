"""Server-wide state that lives in the database so every process sees the same value."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class ServerSetting(Model):
    """A runtime setting changed by admins (e.g. node-auth's ``2fa-policy``)."""

    key = fields.CharField(max_length=100, primary_key=True)
    value: object = fields.JSONField(null=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "server_settings"
        table_description = "Runtime settings shared by every process"


class Role(Model):
    """A named role admins can grant (``admin`` always exists implicitly)."""

    name = fields.CharField(max_length=64, primary_key=True)
    permissions: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "roles"
        table_description = "Grantable roles"


class Lease(Model):
    """A named, expiring lock so one of several processes runs a periodic job (cleanup):
    taken with a conditional UPDATE, released by expiry if its holder dies."""

    name = fields.CharField(max_length=64, primary_key=True)
    holder = fields.CharField(max_length=64)
    expires_at = fields.DatetimeField()

    class Meta:
        table = "leases"
        table_description = "Expiring locks for periodic jobs"
