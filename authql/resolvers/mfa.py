"""Second-factor flows. So far: the preflight that tells a sign-in form what to ask for."""

from __future__ import annotations

from dataclasses import dataclass

from authql.context import RequestContext
from authql.resolvers._common import normalize_email, spend
from authql.resolvers.sessions import find_account


@dataclass(frozen=True)
class TwoFactorPreflightView:
    requires_two_factor: bool
    methods: tuple[str, ...]


async def check_two_factor(ctx: RequestContext, *, identifier: str) -> TwoFactorPreflightView:
    """Whether signing in as ``identifier`` will ask for a second factor, and which.

    Unknown identifiers get the same answer as accounts without a factor, so the preflight
    reveals nothing about who has an account; it spends the per-ip login budget.
    """
    await spend(ctx, "login_ip", ctx.ip_address)
    user = await find_account(normalize_email(identifier)[:320])
    if user is None or not user.two_factor_enabled:
        return TwoFactorPreflightView(requires_two_factor=False, methods=())
    return TwoFactorPreflightView(requires_two_factor=True, methods=("TOTP", "BACKUP_CODE"))
