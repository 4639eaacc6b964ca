"""Pending second-factor sign-ins: what every sign-in path returns when the account has
2FA on, instead of a session."""

from __future__ import annotations

import datetime as dt
import uuid

from authql.context import RequestContext
from authql.models import BackupCode, TotpCredential, TwoFactorChallenge, User
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.services.tokens import digest, new_opaque_token

CHALLENGE_TTL = 300


async def available_methods(user: User) -> tuple[str, ...]:
    """The second factors ``user`` can complete a challenge with, strongest first."""
    methods: list[str] = []
    if await TotpCredential.exists(user_id=user.id, secret_encrypted__isnull=False):
        methods.append("TOTP")
    if await BackupCode.exists(user_id=user.id, used_at=None):
        methods.append("BACKUP_CODE")
    if user.phone and user.phone_verified:
        methods.append("SMS")
    if user.email_verified:
        methods.append("EMAIL")
    return tuple(methods)


async def issue_challenge(
    ctx: RequestContext, user: User, *, method: str, remember: bool, setup: bool = False
) -> AuthOutcome:
    """A single-use, five-minute challenge bound to ``user`` and the first factor used.

    ``setup``: the policy requires 2FA and the account has none; the token then allows
    only enrolling TOTP (after which it completes like any challenge)."""
    token = new_opaque_token()
    now = ctx.services.clock.now()
    await TwoFactorChallenge.create(
        id=uuid.uuid4(),
        user_id=user.id,
        digest=digest(token),
        method=method,
        remember=remember,
        purpose="setup" if setup else "verify",
        created_at=now,
        expires_at=now + dt.timedelta(seconds=CHALLENGE_TTL),
    )
    if setup:
        return AuthOutcome(
            status=AuthStatus.TWO_FACTOR_SETUP_REQUIRED,
            challenge_token=token,
            two_factor_methods=("TOTP",),
        )
    return AuthOutcome(
        status=AuthStatus.TWO_FACTOR_REQUIRED,
        challenge_token=token,
        two_factor_methods=await available_methods(user),
    )
