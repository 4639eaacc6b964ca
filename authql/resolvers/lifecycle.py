"""Deleting an account, and bringing a deleted one back.

Deleting is a soft delete by default: the account is marked deleted, every session, live
one-time link or code, pending 2FA challenge and OAuth link flow of it dies at once (the
access token is refused on the next request), every sign-in path answers as if it did not
exist, and its email stays reserved. It is restorable for ``deleted_retention_days``; then
cleanup purges it (``authql.resolvers.cleanup.purge_account``). A hard delete purges at
once: node-auth's ``DELETE /account`` and admins' ``deleteUser(hard: true)``.

Re-checking the owner before deleting (``delete_account``): an account with a password
must send it; an account with 2FA on must send a current TOTP or backup code; both when it
has both. An account with neither (OAuth or passwordless, no 2FA) needs only the session.
A wrong password is INVALID_CREDENTIALS and a wrong code INVALID_TOKEN; both count toward
the account's lockout like failed sign-ins, and a locked account cannot delete itself
(ACCOUNT_LOCKED) until the lock ends. A missing one is refused the same way, uncounted.

Restoring: ``request_account_restore`` answers True at once, the same for every address;
the lookup and the mail happen off the response path. The mailed link is single use,
purpose-bound and lives an hour at most, never past the end of the restore window.
``restore_account`` undeletes the account (the address counts as verified: the link was
read in its mailbox) and signs in through ``start_session``, so 2FA still applies.
"""

from __future__ import annotations

import uuid

from tortoise.transactions import in_transaction

from authql.context import RequestContext
from authql.errors import (
    AccountLocked,
    AccountSoftDeleted,
    Conflict,
    InvalidCredentials,
    InvalidToken,
    NotFound,
    Unauthorized,
)
from authql.models import OAuthState, OneTimeToken, Session, TwoFactorChallenge, User
from authql.resolvers import _notify
from authql.resolvers._common import emit, normalize_email, spend
from authql.resolvers.cleanup import purge_account, retention_cutoff, scrub_events
from authql.resolvers.mfa import _require_current_code
from authql.resolvers.outcomes import AuthOutcome
from authql.resolvers.sessions import record_failure, start_session
from authql.services import templates
from authql.services.events import AuthEventType

PURPOSE = "account_restore"
#: The longest a restore link lives (shorter when the restore window ends sooner).
RESTORE_LINK_TTL = 3600
#: The page a restore link opens when the surface names none (it submits the token).
RESTORE_PAGE = "/restore-account"
TEMPLATE = "account_restore"

# The restore mail's default text; AUTHQL_TEMPLATES_DIR may override it like any other.
templates._DEFAULTS.setdefault(
    TEMPLATE,
    (
        "Restore your $product account",
        "Someone asked to restore your deleted $product account.\n"
        "To restore it, open this link:\n\n$link\n\n"
        "It expires in $minutes minutes and works once. If it was not you, ignore this mail;"
        " the account stays deleted and is erased for good when its restore window ends.",
    ),
)


async def delete_account(
    ctx: RequestContext,
    *,
    password: str | None = None,
    code: str | None = None,
    hard: bool = False,
) -> bool:
    """Delete the caller's account after re-checking them (see the module docstring).

    Raises UNAUTHORIZED, ACCOUNT_LOCKED, INVALID_CREDENTIALS, INVALID_TOKEN, RATE_LIMITED.
    """
    principal = ctx.require_principal()
    user = await User.get_or_none(id=principal.user.id, deleted_at=None)
    if user is None:
        raise Unauthorized()
    await _recheck(ctx, user, password, code)
    await _delete(ctx, user.id, hard=hard, actor=principal.user.id, session_id=principal.session.id)
    return True


async def delete_user(ctx: RequestContext, *, user_id: str, hard: bool = False) -> bool:
    """Admins: delete an account, soft (restorable) unless ``hard``. Deleting an account
    already soft-deleted softly changes nothing; hard purges it. Raises UNAUTHORIZED,
    FORBIDDEN, NOT_FOUND."""
    admin = ctx.require_admin()
    try:
        ident = uuid.UUID(user_id)
    except ValueError:
        raise NotFound("User not found.") from None
    user = await User.get_or_none(id=ident)
    if user is None:
        raise NotFound("User not found.")
    if hard or user.deleted_at is None:
        await _delete(ctx, ident, hard=hard, actor=admin.user.id, session_id=None)
    return True


async def _recheck(ctx: RequestContext, user: User, password: str | None, code: str | None) -> None:
    """The owner proves it again: password if the account has one, code if 2FA is on."""
    services = ctx.services
    now = services.clock.now()
    if user.locked_until is not None and user.locked_until > now:
        raise AccountLocked(retry_after=(user.locked_until - now).total_seconds())
    if user.password_hash is not None:
        if not password:
            raise InvalidCredentials("Password is required.")
        await spend(ctx, "login_ip", ctx.ip_address)
        acceptable = len(password) <= services.settings.password_max_length
        verification = await services.passwords.verify(
            user.password_hash if acceptable else None, password if acceptable else ""
        )
        if not verification.ok:
            await record_failure(ctx, user, now)
            await emit(
                ctx,
                AuthEventType.LOGIN_FAILED,
                user_id=str(user.id),
                session_id=ctx.principal.session.id if ctx.principal else None,
                success=False,
                reason="wrong_password_on_delete",
            )
            raise InvalidCredentials("Password is incorrect.")
    if user.two_factor_enabled:
        if not code:
            raise InvalidToken("A current two-factor code is required.")
        await _require_current_code(ctx, user, code)


async def _delete(
    ctx: RequestContext,
    user_id: uuid.UUID,
    *,
    hard: bool,
    actor: str,
    session_id: str | None,
) -> None:
    """Soft-delete or purge; the event (and the cache drop) only for the call that did it."""
    done = await purge_account(str(user_id)) if hard else await _soft_delete(ctx, user_id)
    if not done:
        return  # a concurrent deletion got there first and reported it
    ctx.services.principals.invalidate_user(str(user_id))
    await emit(
        ctx,
        AuthEventType.ACCOUNT_DELETED,
        user_id=str(user_id),
        session_id=session_id,
        mode="hard" if hard else "soft",
        actor=actor,
    )
    if hard:
        await scrub_events(user_id)  # the event just written carries the request's ip


async def _soft_delete(ctx: RequestContext, user_id: uuid.UUID) -> bool:
    """Mark the account deleted and kill whatever could still sign it in."""
    now = ctx.services.clock.now()
    async with in_transaction():
        marked = await User.filter(id=user_id, deleted_at=None).update(deleted_at=now)
        if not marked:
            return False
        await Session.filter(user_id=user_id, revoked_at=None).update(revoked_at=now)
        await OneTimeToken.filter(user_id=user_id, used_at=None).update(used_at=now)
        await TwoFactorChallenge.filter(user_id=user_id, used_at=None).update(used_at=now)
        await OAuthState.filter(link_user_id=user_id, used_at=None).update(used_at=now)
    return True


async def request_account_restore(
    ctx: RequestContext, *, email: str, link_base: str | None = None
) -> bool:
    """Mail a restore link if ``email`` belongs to an account deleted inside the restore
    window. Always True, in the same time either way. Raises RATE_LIMITED (per ip and per
    address)."""
    key = normalize_email(email)[:320]
    await spend(ctx, "recovery_ip", ctx.ip_address)
    await spend(ctx, "recovery", key)
    services = ctx.services

    async def job() -> None:
        cutoff = retention_cutoff(services.clock.now(), services.settings.deleted_retention_days)
        user = await User.get_or_none(email=key, deleted_at__gt=cutoff)
        if user is None or user.deleted_at is None:
            return
        left = int((user.deleted_at - cutoff).total_seconds())
        ttl = min(RESTORE_LINK_TTL, left)
        if ttl <= 0:
            return
        token = await services.one_time.issue_link(str(user.id), PURPOSE, ttl=ttl)
        _notify.mail(
            ctx,
            user.email,
            TEMPLATE,
            link=_notify.link(ctx, link_base, token, None, page=RESTORE_PAGE),
            minutes=_notify.minutes(ttl),
        )

    services.delivery.defer("account-restore", job)
    return True


async def restore_account(ctx: RequestContext, *, token: str) -> AuthOutcome:
    """Undelete the account of a restore link and sign in (a session, or the 2FA
    challenge). Outside the restore window nothing is restored: INVALID_TOKEN (expired).
    Raises INVALID_TOKEN, RATE_LIMITED."""
    await spend(ctx, "verify_ip", ctx.ip_address)
    services = ctx.services
    record = await services.one_time.consume_link(token, PURPOSE)
    cutoff = retention_cutoff(services.clock.now(), services.settings.deleted_retention_days)
    user = await User.get_or_none(id=record.user_id, deleted_at__isnull=False)
    if user is None:
        raise InvalidToken()
    # One conditional UPDATE: a purge (which needs deleted_at <= cutoff) cannot interleave.
    restored = await User.filter(id=user.id, deleted_at__gt=cutoff).update(
        deleted_at=None, email_verified=True
    )
    if restored != 1:
        raise InvalidToken("This link has expired.", expired=True)
    user.deleted_at, user.email_verified = None, True
    services.principals.invalidate_user(str(user.id))
    await emit(ctx, AuthEventType.ACCOUNT_RESTORED, user_id=str(user.id))
    return await start_session(ctx, user, method="account_restore")


async def reclaim_email(ctx: RequestContext, email: str, taken: Conflict) -> bool:
    """Registration found ``email`` taken (``taken``). While a deleted owner may still
    restore it: AccountSoftDeleted, with ``taken``'s message and fields (so surfaces that
    do not name the case answer exactly as for a live account). An owner past the window
    is purged now: True, the address is free. A live owner: False."""
    owner = await User.get_or_none(email=email, deleted_at__isnull=False)
    if owner is None or owner.deleted_at is None:
        return False
    settings = ctx.services.settings
    cutoff = retention_cutoff(ctx.services.clock.now(), settings.deleted_retention_days)
    if owner.deleted_at > cutoff:
        raise AccountSoftDeleted(taken.message, fields=taken.fields)
    await purge_account(str(owner.id), deleted_before=cutoff)
    return True
