"""What sign-in flows return, whatever surface renders it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from authql.views import SessionView, UserView


class AuthStatus(enum.Enum):
    """The contract's AuthStatus (plus TWO_FACTOR_SETUP_REQUIRED and APPROVAL_PENDING)."""

    OK = "OK"
    TWO_FACTOR_REQUIRED = "TWO_FACTOR_REQUIRED"
    EMAIL_NOT_VERIFIED = "EMAIL_NOT_VERIFIED"
    #: Policy requires 2FA and the account has none: the challenge allows only TOTP setup.
    TWO_FACTOR_SETUP_REQUIRED = "TWO_FACTOR_SETUP_REQUIRED"
    #: The account was created but registration needs an admin's approval: no session.
    APPROVAL_PENDING = "APPROVAL_PENDING"


@dataclass(frozen=True)
class AuthOutcome:
    """A sign-in result: tokens and session when OK, a challenge when a factor is pending."""

    status: AuthStatus
    user: UserView | None = None
    session: SessionView | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    expires_in: int | None = None
    challenge_token: str | None = None
    two_factor_methods: tuple[str, ...] | None = None
    #: Opaque session token for cookie-session transports (only when asked for).
    session_token: str | None = None

    @property
    def token_type(self) -> str | None:
        return "Bearer" if self.access_token else None
