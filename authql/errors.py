"""The one failure channel: AuthError and its subclasses, each carrying a stable ErrorCode.

Resolvers raise these; adapters render them (GraphQL as ``extensions.code``, each REST
dialect through its own status/body table). Anything that is not an AuthError is an
unexpected failure and is masked by the adapters.

    AuthError (code)
    ├── ValidationFailed       VALIDATION_ERROR   (+ fields: {field: message})
    ├── Unauthorized           UNAUTHORIZED
    ├── InvalidCredentials     INVALID_CREDENTIALS
    ├── InvalidToken           INVALID_TOKEN
    │   ├── ChallengeInvalid   (a dead 2FA challenge, not a wrong code)
    │   └── StateInvalid       (a dead or foreign OAuth state)
    ├── Forbidden              FORBIDDEN
    ├── EmailNotVerified       EMAIL_NOT_VERIFIED
    ├── TwoFactorRequired      TWO_FACTOR_REQUIRED
    ├── NotFound               NOT_FOUND
    ├── Conflict               CONFLICT
    │   └── OAuthConflict      (an external identity matching an existing account's email)
    ├── AccountLocked          ACCOUNT_LOCKED     (+ retry_after)
    ├── RateLimited            RATE_LIMITED       (+ retry_after)
    └── ProviderError          PROVIDER_ERROR
"""

from __future__ import annotations

import enum
import math


class ErrorCode(enum.Enum):
    """The contract's ErrorCode, plus INTERNAL for masked unexpected failures."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNAUTHORIZED = "UNAUTHORIZED"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    INVALID_TOKEN = "INVALID_TOKEN"
    FORBIDDEN = "FORBIDDEN"
    EMAIL_NOT_VERIFIED = "EMAIL_NOT_VERIFIED"
    TWO_FACTOR_REQUIRED = "TWO_FACTOR_REQUIRED"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    ACCOUNT_LOCKED = "ACCOUNT_LOCKED"
    RATE_LIMITED = "RATE_LIMITED"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    INTERNAL = "INTERNAL"


class AuthError(Exception):
    """A failure the caller may see. ``message`` is safe to show; it never names secrets."""

    code: ErrorCode = ErrorCode.INTERNAL
    default_message = "Request failed."

    def __init__(
        self,
        message: str | None = None,
        *,
        fields: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.fields = fields or {}
        self.retry_after = None if retry_after is None else max(1, math.ceil(retry_after))
        super().__init__(self.message)


class ValidationFailed(AuthError):
    code = ErrorCode.VALIDATION_ERROR
    default_message = "Invalid input."


class Unauthorized(AuthError):
    code = ErrorCode.UNAUTHORIZED
    default_message = "Authentication required."


class InvalidCredentials(AuthError):
    code = ErrorCode.INVALID_CREDENTIALS
    default_message = "Invalid credentials."


class InvalidToken(AuthError):
    """Expired, used, unknown or wrong-purpose token or code. ``expired`` tells dialects
    that distinguish the two (TOKEN_EXPIRED vs TOKEN_INVALID) which it was; it is set only
    for a token that was genuine and unused, so it reveals nothing to a guesser."""

    code = ErrorCode.INVALID_TOKEN
    default_message = "Invalid or expired token."

    def __init__(self, message: str | None = None, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class ChallengeInvalid(InvalidToken):
    """A second-factor challenge that is unknown, used, expired or dead after too many
    wrong codes (as opposed to a wrong code for a live one)."""

    default_message = "Invalid or expired challenge."


class StateInvalid(InvalidToken):
    """An OAuth ``state`` that is unknown, used, expired, for another provider, or presented
    by another browser (as opposed to a refused code or id_token)."""

    default_message = "Invalid or expired sign-in state."


class Forbidden(AuthError):
    code = ErrorCode.FORBIDDEN
    default_message = "Not allowed."


class EmailNotVerified(AuthError):
    code = ErrorCode.EMAIL_NOT_VERIFIED
    default_message = "Email address not verified."


class TwoFactorRequired(AuthError):
    code = ErrorCode.TWO_FACTOR_REQUIRED
    default_message = "Two-factor authentication required."


class NotFound(AuthError):
    code = ErrorCode.NOT_FOUND
    default_message = "Not found."


class Conflict(AuthError):
    code = ErrorCode.CONFLICT
    default_message = "Already in use."


class OAuthConflict(Conflict):
    """An external identity whose email belongs to an existing account: never linked
    silently. ``pending_token`` lets the surface offer the owner a proof-of-ownership
    link (it is not part of the message and must only go back to the same browser)."""

    def __init__(self, message: str, *, email: str, pending_token: str) -> None:
        super().__init__(message, fields={"email": email})
        self.email = email
        self.pending_token = pending_token


class AccountLocked(AuthError):
    code = ErrorCode.ACCOUNT_LOCKED
    default_message = "Account temporarily locked. Try again later."


class RateLimited(AuthError):
    code = ErrorCode.RATE_LIMITED
    default_message = "Too many requests. Try again later."


class ProviderError(AuthError):
    code = ErrorCode.PROVIDER_ERROR
    default_message = "An external provider failed."


class ApiKeyRejected(Unauthorized):
    """An API key refused by the tools/admin routers. ``reason`` is node-auth's code
    (``API_KEY_MISSING|INVALID|REVOKED|EXPIRED`` -> UNAUTHORIZED, ``API_KEY_IP_BLOCKED|
    INSUFFICIENT_SCOPE`` -> FORBIDDEN: the key is genuine but not usable here)."""

    FORBIDDEN_REASONS = frozenset({"API_KEY_IP_BLOCKED", "API_KEY_INSUFFICIENT_SCOPE"})
    MESSAGES = {
        "API_KEY_MISSING": "API key is required.",
        "API_KEY_INVALID": "Invalid API key.",
        "API_KEY_REVOKED": "API key has been revoked.",
        "API_KEY_EXPIRED": "API key has expired.",
        "API_KEY_IP_BLOCKED": "IP address not allowed for this API key.",
        "API_KEY_INSUFFICIENT_SCOPE": "API key lacks the required scope.",
    }

    def __init__(self, reason: str) -> None:
        super().__init__(self.MESSAGES.get(reason, "Invalid API key."))
        self.reason = reason
        if reason in self.FORBIDDEN_REASONS:
            self.code = ErrorCode.FORBIDDEN


class AccountSoftDeleted(Conflict):
    """The email belongs to an account its owner deleted that can still be restored: the
    address stays reserved for the retention window. GraphQL answers it like any taken
    email (CONFLICT, same message); products that document the case (AuthCore's
    ``USER_SOFT_DELETED``) render it as such."""
