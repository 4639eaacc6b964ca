"""Email verification: emailed links (and six-digit codes for code-based products)."""

from __future__ import annotations

from authql.context import RequestContext
from authql.errors import InvalidToken, ValidationFailed
from authql.models import User
from authql.resolvers import _notify
from authql.resolvers._common import emit, normalize_email, spend
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.resolvers.sessions import start_session
from authql.services.events import AuthEventType
from authql.views import UserView

LINK = "email_verification"
CODE = "email_verification_code"


async def _send(
    ctx: RequestContext,
    user: User,
    *,
    return_url: str | None,
    link_base: str | None,
    code: bool,
) -> None:
    """Issue a fresh link (or code) for ``user``'s current address and queue the mail.

    Earlier links or codes die: only the newest mail works."""
    settings = ctx.services.settings
    ttl = settings.email_verification_ttl
    data = {"email": user.email}
    if code:
        secret = await ctx.services.one_time.issue_code(str(user.id), CODE, ttl=ttl, data=data)
        _notify.mail(
            ctx, user.email, "verify_email_code", code=secret, minutes=_notify.minutes(ttl)
        )
    else:
        secret = await ctx.services.one_time.issue_link(str(user.id), LINK, ttl=ttl, data=data)
        _notify.mail(
            ctx,
            user.email,
            "verify_email",
            link=_notify.link(
                ctx, link_base, secret, return_url, page=_notify.DEFAULT_PAGES["verify_email"]
            ),
            minutes=_notify.minutes(ttl),
        )
    await emit(ctx, AuthEventType.EMAIL_VERIFICATION_SENT, user_id=str(user.id))


async def send_link(ctx: RequestContext, user: User, *, link_base: str | None = None) -> None:
    """Mail ``user`` a verification link now (a fresh account under a verification policy)."""
    await _send(ctx, user, return_url=None, link_base=link_base, code=False)


async def send_verification_email(
    ctx: RequestContext,
    *,
    return_url: str | None = None,
    link_base: str | None = None,
    code: bool = False,
) -> bool:
    """Mail the signed-in user a verification link (or code) for their address.

    Raises UNAUTHORIZED, VALIDATION_ERROR when already verified or for a return URL not
    allowed, RATE_LIMITED per account."""
    principal = ctx.require_principal()
    return_url = _notify.check_return_url(ctx, return_url)
    if principal.user.email_verified:
        raise ValidationFailed("Email is already verified.")
    await spend(ctx, "verification_send", principal.user.id)
    user = await User.get(id=principal.user.id)
    await _send(ctx, user, return_url=return_url, link_base=link_base, code=code)
    return True


async def resend_verification(
    ctx: RequestContext,
    *,
    email: str,
    return_url: str | None = None,
    link_base: str | None = None,
) -> bool:
    """Public resend by address: always True, the same answer and timing whether or not an
    unverified account has that address (the work happens off the response path)."""
    return_url = _notify.check_return_url(ctx, return_url)
    key = normalize_email(email)[:320]
    await spend(ctx, "recovery_ip", ctx.ip_address)
    await spend(ctx, "verification_send", key)

    async def job() -> None:
        user = await User.get_or_none(email=key, deleted_at=None)
        if user is not None and not user.email_verified:
            await _send(ctx, user, return_url=return_url, link_base=link_base, code=False)

    ctx.services.delivery.defer("verification", job)
    return True


async def _mark_verified(ctx: RequestContext, user_id: str, email: object) -> User:
    user = await User.get_or_none(id=user_id, deleted_at=None)
    # A link for an address the account no longer has verifies nothing.
    if user is None or user.email != email:
        raise InvalidToken()
    if not user.email_verified:
        await User.filter(id=user.id).update(email_verified=True)
        user.email_verified = True
    await emit(ctx, AuthEventType.EMAIL_VERIFIED, user_id=str(user.id))
    return user


async def verify_email(ctx: RequestContext, *, token: str, sign_in: bool = False) -> AuthOutcome:
    """Mark the address verified from an emailed link; with ``sign_in`` also start a
    session. Raises INVALID_TOKEN for unknown, used, expired or wrong-purpose tokens."""
    await spend(ctx, "verify_ip", ctx.ip_address)
    record = await ctx.services.one_time.consume_link(token, LINK)
    user = await _mark_verified(ctx, str(record.user_id), record.data.get("email"))
    if sign_in:
        return await start_session(ctx, user, method="email_verification")
    return AuthOutcome(status=AuthStatus.OK, user=await UserView.load(user))


async def verify_email_code(ctx: RequestContext, *, code: str) -> UserView:
    """Mark the signed-in user's address verified with the emailed code.

    Raises UNAUTHORIZED, VALIDATION_ERROR when already verified, INVALID_TOKEN for a wrong
    or expired code (the code dies after the configured number of wrong guesses)."""
    principal = ctx.require_principal()
    if principal.user.email_verified:
        raise ValidationFailed("Email is already verified.")
    await spend(ctx, "verify_ip", ctx.ip_address)
    record = await ctx.services.one_time.consume_code(
        principal.user.id, CODE, code, max_attempts=ctx.services.settings.code_max_attempts
    )
    user = await _mark_verified(ctx, principal.user.id, record.data.get("email"))
    return await UserView.load(user)
