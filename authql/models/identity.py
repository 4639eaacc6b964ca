"""External identities (OAuth / OpenID Connect) and pending sign-in states."""

from __future__ import annotations

import uuid

from tortoise import fields
from tortoise.models import Model


class Identity(Model):
    """An account at an external provider, linked to a user. Keyed by (provider, subject),
    never by email: a mutable or unverified email claim must not decide who signs in."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    user = fields.ForeignKeyField(
        "models.User", related_name="identities", on_delete=fields.CASCADE
    )
    provider = fields.CharField(max_length=32)
    subject = fields.CharField(max_length=255)
    email = fields.CharField(max_length=320, null=True)
    email_verified = fields.BooleanField(default=False)
    linked_at = fields.DatetimeField()

    user_id: uuid.UUID

    class Meta:
        table = "identities"
        table_description = "External identities keyed by provider and subject"
        unique_together = (("provider", "subject"),)


class OAuthState(Model):
    """One authorization-code flow in flight: single use, ten minutes, bound to the browser
    that started it (``binding_digest`` is the digest of a cookie set at start), carrying
    the PKCE verifier and the OIDC nonce the callback must check."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    digest = fields.CharField(max_length=64, unique=True)
    provider = fields.CharField(max_length=32)
    code_verifier = fields.CharField(max_length=128)
    nonce = fields.CharField(max_length=128)
    redirect_uri = fields.CharField(max_length=2048)
    return_url = fields.CharField(max_length=2048, null=True)
    link_user = fields.ForeignKeyField(
        "models.User", related_name="oauth_states", null=True, on_delete=fields.CASCADE
    )
    binding_digest = fields.CharField(max_length=64)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField(db_index=True)
    used_at = fields.DatetimeField(null=True)

    link_user_id: uuid.UUID | None

    class Meta:
        table = "oauth_states"
        table_description = "Authorization-code flows in flight"


class PendingIdentity(Model):
    """An external identity the provider vouched for but that belongs to no account yet:
    waiting to be registered (Browsary's register step) or linked after its owner proves
    control of the matching account (node-auth's link-request / link-verify). Single use,
    short-lived, looked up by the digest of a token handed to the browser."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    digest = fields.CharField(max_length=64, unique=True)
    provider = fields.CharField(max_length=32)
    subject = fields.CharField(max_length=255)
    email = fields.CharField(max_length=320, null=True)
    email_verified = fields.BooleanField(default=False)
    name = fields.CharField(max_length=200, null=True)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField(db_index=True)
    used_at = fields.DatetimeField(null=True)

    class Meta:
        table = "pending_identities"
        table_description = "External identities waiting to be registered or linked"
