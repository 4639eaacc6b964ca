"""Changing the account's email: confirm from the new address, tell the old one."""

from __future__ import annotations

from tortoise.exceptions import IntegrityError

from authql.context import RequestContext
from authql.errors import Conflict, InvalidCredentials, InvalidToken, ValidationFailed
from authql.models import User
from authql.resolvers import _notify
from authql.resolvers._common import check_email, emit, spend
from authql.services.events import AuthEventType
from authql.views import UserView

PURPOSE = "email_change"


async def request_email_change(
    ctx: RequestContext,
    *,
    new_email: str,
    password: str | None = None,
    return_url: str | None = None,
    link_base: str | None = None,
) -> bool:
    """Mail a confirmation link to ``new_email`` and a notice to the current address.

    Accounts with a password must re-enter it (a stolen session alone cannot move the
    account). Sessions are kept. Raises UNAUTHORIZED, INVALID_CREDENTIALS, VALIDATION_ERROR
    (same address, bad address or return URL), CONFLICT (address taken), RATE_LIMITED."""
    principal = ctx.require_principal()
    return_url = _notify.check_return_url(ctx, return_url)
    email = check_email(new_email, field="newEmail")
    await spend(ctx, "email_change", principal.user.id)
    user = await User.get(id=principal.user.id)
    if user.password_hash is not None:
        verification = await ctx.services.passwords.verify(user.password_hash, password or "")
        if not password or not verification.ok:
            raise InvalidCredentials("Password is incorrect.")
    if email == user.email:
        raise ValidationFailed("That is already your email.", fields={"newEmail": "Unchanged."})
    if await User.exists(email=email):
        raise Conflict("Email already in use.", fields={"newEmail": "Already in use."})
    settings = ctx.services.settings
    token = await ctx.services.one_time.issue_link(
        str(user.id), PURPOSE, ttl=settings.email_change_ttl, data={"email": email}
    )
    _notify.mail(
        ctx,
        email,
        "email_change_confirm",
        email=email,
        link=_notify.link(
            ctx, link_base, token, return_url, page=_notify.DEFAULT_PAGES["email_change_confirm"]
        ),
        minutes=_notify.minutes(settings.email_change_ttl),
    )
    _notify.mail(ctx, user.email, "email_change_notice", email=email)
    await emit(ctx, AuthEventType.EMAIL_CHANGE_REQUESTED, user_id=str(user.id))
    return True


async def confirm_email_change(ctx: RequestContext, *, token: str) -> UserView:
    """Move the account to the confirmed address (now verified); the old address is told.

    Raises INVALID_TOKEN, CONFLICT when the address was taken meanwhile."""
    await spend(ctx, "verify_ip", ctx.ip_address)
    record = await ctx.services.one_time.consume_link(token, PURPOSE)
    user = await User.get_or_none(id=record.user_id, deleted_at=None)
    new_email = record.data.get("email")
    if user is None or not isinstance(new_email, str):
        raise InvalidToken()
    old_email = user.email
    try:
        updated = await User.filter(id=user.id).update(email=new_email, email_verified=True)
    except IntegrityError:
        raise Conflict("Email already in use.") from None
    if not updated:
        raise InvalidToken()
    _notify.mail(ctx, old_email, "email_changed_notice", email=new_email)
    await emit(ctx, AuthEventType.EMAIL_CHANGED, user_id=str(user.id))
    user.email, user.email_verified = new_email, True
    return await UserView.load(user)
