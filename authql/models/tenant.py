"""Tenants and their sign-in policy."""

from __future__ import annotations

import uuid

from tortoise import fields
from tortoise.models import Model


class Tenant(Model):
    """An organisation with its own sign-in policy. Accounts without a tenant follow the
    server-wide policy from settings.

    ``login_methods`` lists what may sign in (``password``, ``magic-link``, ``sms``,
    ``oauth:<provider>``; empty means all); ``registration`` is ``open``, ``closed`` or
    ``approval``; ``password_rules`` names required character classes (``upper``, ``lower``,
    ``digit``, ``symbol``)."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    slug = fields.CharField(max_length=64, unique=True)
    name = fields.CharField(max_length=200)
    login_methods: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    registration = fields.CharField(max_length=16, default="open")
    require_email_verification = fields.BooleanField(default=False)
    require_two_factor = fields.BooleanField(default=False)
    password_min_length = fields.IntField(default=8)
    password_rules: list[str] = fields.JSONField(default=list)  # type: ignore[assignment]
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "tenants"
        table_description = "Tenants with their sign-in policy"


class TenantDomain(Model):
    """A domain that selects a tenant (``tenantPolicy(domain:)``); unique across tenants."""

    id = fields.IntField(primary_key=True)
    tenant = fields.ForeignKeyField(
        "models.Tenant", related_name="domains", on_delete=fields.CASCADE
    )
    domain = fields.CharField(max_length=253, unique=True)

    tenant_id: uuid.UUID

    class Meta:
        table = "tenant_domains"
        table_description = "Domains selecting a tenant"
