"""Tortoise models, one module per aggregate. Secrets are stored only as digests or hashes."""

from authql.models.event import AuthEventRecord
from authql.models.identity import Identity, OAuthState, PendingIdentity
from authql.models.mfa import BackupCode, TotpCredential, TwoFactorChallenge
from authql.models.session import RefreshToken, Session
from authql.models.system import Lease, Role, ServerSetting
from authql.models.telemetry import ApiKey, TrackedEvent, Webhook, WebhookAttempt, WebhookDelivery
from authql.models.tenant import Tenant, TenantDomain
from authql.models.token import OneTimeToken
from authql.models.user import User, UserRole

#: The module list Tortoise registers (app label "models").
MODEL_MODULES = [
    "authql.models.user",
    "authql.models.session",
    "authql.models.event",
    "authql.models.token",
    "authql.models.mfa",
    "authql.models.identity",
    "authql.models.tenant",
    "authql.models.telemetry",
    "authql.models.system",
]

__all__ = [
    "MODEL_MODULES",
    "ApiKey",
    "AuthEventRecord",
    "BackupCode",
    "Identity",
    "Lease",
    "OAuthState",
    "OneTimeToken",
    "PendingIdentity",
    "RefreshToken",
    "Role",
    "ServerSetting",
    "Session",
    "Tenant",
    "TenantDomain",
    "TotpCredential",
    "TrackedEvent",
    "TwoFactorChallenge",
    "User",
    "UserRole",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
]
