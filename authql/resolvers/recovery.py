"""Password recovery: request a reset link, then set a new password with it."""

from __future__ import annotations

from tortoise.transactions import in_transaction

from authql.context import RequestContext
from authql.errors import InvalidToken
from authql.models import Session, User
from authql.resolvers import _notify
from authql.resolvers._common import (
    check_not_breached,
    check_password,
    emit,
    normalize_email,
    spend,
)
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.resolvers.policy import policy_for_user
from authql.resolvers.sessions import find_account, start_session
from authql.services.events import AuthEventType
from authql.views import UserView

PURPOSE = "password_reset"


async def request_password_reset(
    ctx: RequestContext,
    *,
    identifier: str,
    return_url: str | None = None,
    link_base: str | None = None,
) -> bool:
    """Mail a single-use reset link to the account's stored address. Always True.

    The answer and its timing are the same whether or not the account exists: the lookup,
    the token and the mail all happen after the response. Raises only VALIDATION_ERROR (a
    return URL not allowed) and RATE_LIMITED (per ip and per identifier)."""
    return_url = _notify.check_return_url(ctx, return_url)
    key = normalize_email(identifier)[:320]
    await spend(ctx, "recovery_ip", ctx.ip_address)
    await spend(ctx, "recovery", key)
    settings = ctx.services.settings

    async def job() -> None:
        user = await find_account(key)
        if user is None:
            await emit(ctx, AuthEventType.PASSWORD_RESET_REQUESTED, success=False)
            return
        token = await ctx.services.one_time.issue_link(
            str(user.id), PURPOSE, ttl=settings.password_reset_ttl
        )
        _notify.mail(
            ctx,
            user.email,
            "password_reset",
            link=_notify.link(
                ctx, link_base, token, return_url, page=_notify.DEFAULT_PAGES["password_reset"]
            ),
            minutes=_notify.minutes(settings.password_reset_ttl),
        )
        await emit(ctx, AuthEventType.PASSWORD_RESET_REQUESTED, user_id=str(user.id))

    ctx.services.delivery.defer("password-reset", job)
    return True


async def reset_password(
    ctx: RequestContext, *, token: str, password: str, sign_in: bool = False
) -> AuthOutcome:
    """Set a new password from a reset link; every session of the account ends.

    The password is checked (the account's policy, the breached-password check) before the
    token is spent for good, so a weak choice does not burn the link. Clears any lockout
    and marks the address verified (the owner proved control of the mailbox). With
    ``sign_in`` a sign-in follows (a session, or the 2FA challenge).
    Raises VALIDATION_ERROR, INVALID_TOKEN, RATE_LIMITED."""
    await spend(ctx, "verify_ip", ctx.ip_address)
    # The breached check needs no account and calls out over the network: before the link
    # is spent and outside any transaction.
    await check_not_breached(ctx, password)
    async with in_transaction():
        # The rules are the account's (its tenant's), known only once the link names it:
        # failing them inside the transaction that spends the link un-spends it.
        record = await ctx.services.one_time.consume_link(token, PURPOSE)
        owner = await User.get_or_none(id=record.user_id, deleted_at=None)
        if owner is None:
            raise InvalidToken()
        check_password(ctx, password, rules=(await policy_for_user(ctx, owner)).password)
    password_hash = await ctx.services.passwords.hash(password)
    now = ctx.services.clock.now()
    async with in_transaction():
        user = await User.get_or_none(id=record.user_id, deleted_at=None)
        if user is None:
            raise InvalidToken()
        # The link was read in the account's mailbox: that verifies the address too.
        await User.filter(id=user.id).update(
            password_hash=password_hash, failed_logins=0, locked_until=None, email_verified=True
        )
        revoked = await Session.filter(user_id=user.id, revoked_at=None).update(revoked_at=now)
    await ctx.services.one_time.revoke(str(user.id), PURPOSE)
    user.password_hash, user.email_verified = password_hash, True
    await emit(ctx, AuthEventType.PASSWORD_RESET, user_id=str(user.id), sessions_revoked=revoked)
    if sign_in:
        return await start_session(ctx, user, method="password_reset")
    return AuthOutcome(status=AuthStatus.OK, user=await UserView.load(user))
