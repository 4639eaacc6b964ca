"""node-auth's dotted event names (``identity.<resource>.<action>``) for authql's events.

The tools router's SSE frames, ``/tools/telemetry`` and outgoing webhooks speak these names
(DIALECTS.md b2), so receivers written for node-auth keep working. One table, used by every
outlet that needs it.
"""

from __future__ import annotations

from authql.services.events import AuthEventType

DOTTED_NAMES: dict[AuthEventType, str] = {
    AuthEventType.REGISTERED: "identity.user.created",
    AuthEventType.LOGIN_SUCCEEDED: "identity.auth.login.success",
    AuthEventType.LOGIN_FAILED: "identity.auth.login.failed",
    AuthEventType.LOGOUT: "identity.auth.logout",
    AuthEventType.TOKEN_REFRESHED: "identity.session.rotated",
    AuthEventType.REFRESH_REUSE_DETECTED: "identity.session.reuse_detected",
    AuthEventType.PASSWORD_CHANGED: "identity.user.password.changed",
    AuthEventType.PASSWORD_RESET_REQUESTED: "identity.user.password.reset_requested",
    AuthEventType.PASSWORD_RESET: "identity.user.password.reset",
    AuthEventType.EMAIL_VERIFICATION_SENT: "identity.user.email.verification_sent",
    AuthEventType.EMAIL_VERIFIED: "identity.user.email.verified",
    AuthEventType.EMAIL_CHANGE_REQUESTED: "identity.user.email.change_requested",
    AuthEventType.EMAIL_CHANGED: "identity.user.email.changed",
    AuthEventType.MAGIC_LINK_SENT: "identity.auth.magic_link.sent",
    AuthEventType.MAGIC_LINK_USED: "identity.auth.magic_link.used",
    AuthEventType.SMS_CODE_SENT: "identity.auth.sms.sent",
    AuthEventType.SMS_CODE_VERIFIED: "identity.auth.sms.verified",
    AuthEventType.TWO_FACTOR_ENABLED: "identity.user.2fa.enabled",
    AuthEventType.TWO_FACTOR_DISABLED: "identity.user.2fa.disabled",
    AuthEventType.TWO_FACTOR_FAILED: "identity.auth.2fa.failed",
    AuthEventType.BACKUP_CODE_USED: "identity.auth.2fa.backup_code_used",
    AuthEventType.OAUTH_LOGIN: "identity.auth.oauth.login",
    AuthEventType.OAUTH_LINKED: "identity.user.oauth.linked",
    AuthEventType.OAUTH_UNLINKED: "identity.user.oauth.unlinked",
    AuthEventType.ACCOUNT_LOCKED: "identity.user.locked",
    AuthEventType.ACCOUNT_UNLOCKED: "identity.user.unlocked",
    AuthEventType.ACCOUNT_DELETED: "identity.user.deleted",
    AuthEventType.ACCOUNT_RESTORED: "identity.user.restored",
    AuthEventType.SESSION_REVOKED: "identity.session.revoked",
    AuthEventType.ROLES_CHANGED: "identity.role.assigned",
    AuthEventType.RATE_LIMITED: "identity.auth.rate_limited",
    AuthEventType.PROFILE_UPDATED: "identity.user.updated",
    AuthEventType.DELIVERY_FAILED: "identity.delivery.failed",
}

EVENT_TYPES_BY_NAME: dict[str, AuthEventType] = {name: kind for kind, name in DOTTED_NAMES.items()}


def dotted_name(event_type: AuthEventType) -> str:
    """The ``identity.*`` name of ``event_type``."""
    return DOTTED_NAMES[event_type]
