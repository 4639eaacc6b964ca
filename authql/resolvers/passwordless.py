"""Signing in without a password: magic links by mail, one-time codes by SMS."""

from __future__ import annotations

import uuid

from authql.context import RequestContext
from authql.errors import InvalidToken, NotFound, ValidationFailed
from authql.models import User
from authql.resolvers import _notify
from authql.resolvers._common import check_phone, emit, normalize_email, spend
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.resolvers.sessions import start_session
from authql.services.events import AuthEventType
from authql.views import UserView

MAGIC_LINK = "magic_link"
SMS_LOGIN = "sms_login"
PHONE_VERIFICATION = "phone_verification"


async def send_magic_link(
    ctx: RequestContext,
    *,
    email: str,
    return_url: str | None = None,
    link_base: str | None = None,
) -> bool:
    """Mail a single-use sign-in link. Always True: unknown addresses get the same answer
    and timing (the work happens after the response). Raises VALIDATION_ERROR (return URL)
    and RATE_LIMITED (per ip and per address)."""
    return_url = _notify.check_return_url(ctx, return_url)
    key = normalize_email(email)[:320]
    await spend(ctx, "magic_link_ip", ctx.ip_address)
    await spend(ctx, "magic_link", key)
    ttl = ctx.services.settings.magic_link_ttl

    async def job() -> None:
        user = await User.get_or_none(email=key, deleted_at=None)
        if user is None:
            return
        token = await ctx.services.one_time.issue_link(str(user.id), MAGIC_LINK, ttl=ttl)
        _notify.mail(
            ctx,
            user.email,
            "magic_link",
            link=_notify.link(
                ctx, link_base, token, return_url, page=_notify.DEFAULT_PAGES["magic_link"]
            ),
            minutes=_notify.minutes(ttl),
        )
        await emit(ctx, AuthEventType.MAGIC_LINK_SENT, user_id=str(user.id))

    ctx.services.delivery.defer("magic-link", job)
    return True


async def verify_magic_link(
    ctx: RequestContext, *, token: str, remember: bool = False
) -> AuthOutcome:
    """Sign in from a magic link; its first use also marks the address verified (the link
    could only be read in that mailbox). Raises INVALID_TOKEN, RATE_LIMITED."""
    await spend(ctx, "verify_ip", ctx.ip_address)
    record = await ctx.services.one_time.consume_link(token, MAGIC_LINK)
    user = await User.get_or_none(id=record.user_id, deleted_at=None)
    if user is None:
        raise InvalidToken()
    if not user.email_verified:
        await User.filter(id=user.id).update(email_verified=True)
        user.email_verified = True
        await emit(ctx, AuthEventType.EMAIL_VERIFIED, user_id=str(user.id), method="magic_link")
    await emit(ctx, AuthEventType.MAGIC_LINK_USED, user_id=str(user.id))
    return await start_session(ctx, user, method="magic_link", remember=remember)


async def _account_for_sms(
    *, phone: str | None, email: str | None, user_id: str | None
) -> User | None:
    if user_id is not None:
        try:
            user = await User.get_or_none(id=uuid.UUID(user_id), deleted_at=None)
        except ValueError:
            user = None
        if user is None:
            raise NotFound("User not found.")
        if not user.phone:
            raise ValidationFailed("No phone number on this account.", fields={"phone": "Not set."})
        return user
    if email is not None:
        return await User.get_or_none(email=normalize_email(email)[:320], deleted_at=None)
    assert phone is not None
    return await User.get_or_none(phone=phone, deleted_at=None)


async def send_sms_code(
    ctx: RequestContext,
    *,
    phone: str | None = None,
    email: str | None = None,
    user_id: str | None = None,
) -> bool:
    """Text a six-digit code. Signed in with a new ``phone``: a code that verifies (and
    sets) that number. Otherwise a sign-in code to the account's number, found by phone or
    email (always True, same timing: unknown ones get nothing) or by ``user_id`` (NOT_FOUND,
    or VALIDATION_ERROR when the account has no number, as node-auth documents; user ids are
    not guessable). Raises RATE_LIMITED per ip and per number."""
    if phone is None and email is None and user_id is None:
        raise ValidationFailed("A phone number is required.", fields={"phone": "Required."})
    number = check_phone(phone) if phone is not None else None
    await spend(ctx, "sms_send_ip", ctx.ip_address)
    settings = ctx.services.settings
    ttl = settings.sms_code_ttl
    principal = ctx.principal
    if (
        principal is not None
        and number is not None
        and not (number == principal.user.phone and principal.user.phone_verified)
    ):
        await spend(ctx, "sms_send", number)
        if await User.filter(phone=number).exclude(id=principal.user.id).exists():
            raise ValidationFailed(
                "That number belongs to another account.", fields={"phone": "Already in use."}
            )
        code = await ctx.services.one_time.issue_code(
            principal.user.id, PHONE_VERIFICATION, ttl=ttl, data={"phone": number}
        )
        _notify.text(ctx, number, "sms_code", code=code, minutes=_notify.minutes(ttl))
        await emit(
            ctx, AuthEventType.SMS_CODE_SENT, user_id=principal.user.id, purpose="verify_phone"
        )
        return True
    if user_id is not None:
        user = await _account_for_sms(phone=None, email=None, user_id=user_id)
        assert user is not None and user.phone
        await spend(ctx, "sms_send", user.phone)
        await _send_login_code(ctx, user, ttl)
        return True
    await spend(ctx, "sms_send", number or normalize_email(email or ""))

    async def job() -> None:
        user = await _account_for_sms(phone=number, email=email, user_id=None)
        if user is not None and user.phone:
            await _send_login_code(ctx, user, ttl)

    ctx.services.delivery.defer("sms-code", job)
    return True


async def _send_login_code(ctx: RequestContext, user: User, ttl: int) -> None:
    assert user.phone
    code = await ctx.services.one_time.issue_code(
        str(user.id), SMS_LOGIN, ttl=ttl, data={"phone": user.phone}
    )
    _notify.text(ctx, user.phone, "sms_code", code=code, minutes=_notify.minutes(ttl))
    await emit(ctx, AuthEventType.SMS_CODE_SENT, user_id=str(user.id), purpose="login")


async def verify_sms_code(
    ctx: RequestContext,
    *,
    code: str,
    phone: str | None = None,
    user_id: str | None = None,
) -> AuthOutcome:
    """Check a texted code. Signed in with a pending number: the number is set and verified
    (outcome carries the user, no new session). Otherwise sign in the account of ``phone``
    (or ``user_id``): a session, and the number counts as verified. Unknown numbers and
    wrong codes answer alike: INVALID_TOKEN; a code dies after the configured wrong
    guesses. Raises RATE_LIMITED per ip."""
    await spend(ctx, "verify_ip", ctx.ip_address)
    one_time = ctx.services.one_time
    attempts = ctx.services.settings.code_max_attempts
    number = check_phone(phone) if phone is not None else None
    principal = ctx.principal
    if (
        principal is not None
        and number is not None
        and not (number == principal.user.phone and principal.user.phone_verified)
    ):
        record = await one_time.consume_code(
            principal.user.id, PHONE_VERIFICATION, code, max_attempts=attempts
        )
        if record.data.get("phone") != number:
            raise InvalidToken()
        await User.filter(id=principal.user.id).update(phone=number, phone_verified=True)
        await emit(
            ctx, AuthEventType.SMS_CODE_VERIFIED, user_id=principal.user.id, purpose="verify_phone"
        )
        user = await User.get(id=principal.user.id)
        return AuthOutcome(status=AuthStatus.OK, user=await UserView.load(user))
    if number is None and user_id is None:
        raise ValidationFailed("A phone number is required.", fields={"phone": "Required."})
    try:
        user = await _account_for_sms(phone=number, email=None, user_id=user_id)
    except (NotFound, ValidationFailed):
        user = None
    if user is None:
        raise InvalidToken()
    record = await one_time.consume_code(str(user.id), SMS_LOGIN, code, max_attempts=attempts)
    if record.data.get("phone") != user.phone:
        raise InvalidToken()
    if not user.phone_verified:
        await User.filter(id=user.id).update(phone_verified=True)
        user.phone_verified = True
    await emit(ctx, AuthEventType.SMS_CODE_VERIFIED, user_id=str(user.id), purpose="login")
    return await start_session(ctx, user, method="sms")
