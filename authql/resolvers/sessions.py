"""Sign-in and session flows: login, refresh, logout, logout-all, revoke, listing, status.

Every successful sign-in of any kind ends in ``start_session``: one Session row (the
refresh-token family), one opaque refresh token stored as a digest, one access JWT naming
the session. Revocation is a ``revoked_at`` on the session; the event it emits drops the
cached session state, so the old access token is refused on the next request.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, replace
from typing import Any

from tortoise.expressions import F
from tortoise.transactions import in_transaction

from authql.context import RequestContext
from authql.errors import AccountLocked, InvalidCredentials, InvalidToken, NotFound
from authql.models import RefreshToken, Session, User
from authql.resolvers._common import emit, normalize_email, spend
from authql.resolvers.challenges import issue_challenge
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.resolvers.policy import ApprovalPending, MethodNotAllowed, policy_for_user
from authql.services.events import AuthEventType
from authql.services.tokens import digest, new_opaque_token
from authql.views import SessionView, UserView


async def find_account(identifier: str) -> User | None:
    """The live account whose email or username is ``identifier`` (case-insensitive)."""
    key = normalize_email(identifier)
    if not key:
        return None
    lookup = {"email": key} if "@" in key else {"username_key": key}
    return await User.get_or_none(**lookup, deleted_at=None)


async def start_session(
    ctx: RequestContext,
    user: User,
    *,
    method: str,
    remember: bool = False,
    second_factor_done: bool = False,
) -> AuthOutcome:
    """Create a session for ``user`` and issue its first access and refresh tokens.

    Every sign-in path ends here, so this is where two-factor authentication holds: an
    account with 2FA on gets a challenge (status TWO_FACTOR_REQUIRED) instead of a session
    until ``verify_two_factor`` completes it. When the surface carries sessions in a cookie
    (``ctx.session_transport``), an opaque session token is issued too (digest stored).

    The account's sign-in policy (``authql.resolvers.policy``) holds here too, for every
    surface: FORBIDDEN while the account awaits an admin's approval (ApprovalPending) or
    when its tenant does not allow ``method`` (MethodNotAllowed); EMAIL_NOT_VERIFIED and
    the 2FA setup challenge when the policy requires them.
    """
    locked_until = user.locked_until
    if locked_until is not None and locked_until > ctx.services.clock.now():
        # An admin's lock (or a lockout) holds on every way in, not just the password form.
        raise AccountLocked()
    policy = await policy_for_user(ctx, user)
    if user.pending_approval or not policy.allows_session(method):
        # Whatever the first factor, an account awaiting approval, or a way in its policy
        # does not allow, gets no session (and no second-factor challenge).
        pending = user.pending_approval
        await emit(
            ctx,
            AuthEventType.LOGIN_FAILED,
            user_id=str(user.id),
            success=False,
            reason="approval_pending" if pending else "method_not_allowed",
            method=method,
        )
        raise ApprovalPending() if pending else MethodNotAllowed()
    if policy.require_email_verification and not user.email_verified:
        # Whatever the first factor (password, SMS code, reset link), an unverified address
        # gets no session while the policy asks for verification.
        return AuthOutcome(status=AuthStatus.EMAIL_NOT_VERIFIED, user=await UserView.load(user))
    if not second_factor_done:
        if user.two_factor_enabled:
            return await issue_challenge(ctx, user, method=method, remember=remember)
        if policy.require_two_factor:
            return await issue_challenge(ctx, user, method=method, remember=remember, setup=True)
    services = ctx.services
    now = services.clock.now()
    refresh_token = new_opaque_token()
    session_token = new_opaque_token() if ctx.session_transport else None
    async with in_transaction():
        session = await Session.create(
            id=uuid.uuid4(),
            user_id=user.id,
            method=method,
            ip_address=ctx.ip_address,
            user_agent=ctx.user_agent,
            remember=remember,
            created_at=now,
            last_seen_at=now,
            expires_at=now + dt.timedelta(seconds=services.settings.refresh_token_ttl),
            token_digest=digest(session_token) if session_token else None,
        )
        await RefreshToken.create(
            session_id=session.id,
            digest=digest(refresh_token),
            created_at=now,
            expires_at=session.expires_at,
        )
        # Failures reset only when a session is issued: a right password followed by wrong
        # second-factor codes must keep counting toward lockout.
        await User.filter(id=user.id).update(last_login_at=now, failed_logins=0)
    user.last_login_at = now
    view = await UserView.load(user)
    session_view = SessionView.of(session, current_id=str(session.id))
    await emit(
        ctx,
        AuthEventType.LOGIN_SUCCEEDED,
        user_id=view.id,
        session_id=session_view.id,
        method=method,
    )
    outcome = _issued(ctx, view, session_view, refresh_token, now)
    return replace(outcome, session_token=session_token) if session_token else outcome


def _issued(
    ctx: RequestContext,
    user: UserView,
    session: SessionView,
    refresh_token: str,
    now: dt.datetime,
) -> AuthOutcome:
    tokens = ctx.services.access_tokens
    access_token = tokens.issue(
        user_id=user.id, session_id=session.id, roles=list(user.roles), now=now.timestamp()
    )
    return AuthOutcome(
        status=AuthStatus.OK,
        user=user,
        session=session,
        access_token=access_token,
        refresh_token=refresh_token,
        expires_in=tokens.ttl,
    )


async def login(
    ctx: RequestContext, *, identifier: str, password: str, remember: bool = False
) -> AuthOutcome:
    """Password sign-in by email or username.

    Raises RATE_LIMITED (per ip and per identifier), ACCOUNT_LOCKED (with retry_after) and
    INVALID_CREDENTIALS (the same for unknown accounts and wrong passwords, after the same
    argon2 work). Consecutive failures lock the account.
    """
    services = ctx.services
    key = normalize_email(identifier)[:320]
    await spend(ctx, "login_ip", ctx.ip_address)
    await spend(ctx, "login", key)
    user = await find_account(key)
    # An over-long password can never match (registration refuses them); it still pays one
    # dummy verify so the answer takes the same time.
    acceptable = len(password) <= services.settings.password_max_length
    verification = await services.passwords.verify(
        user.password_hash if user and acceptable else None,
        password if acceptable else "",
    )
    now = services.clock.now()
    settings = services.settings
    locked_until = (
        user.locked_until if user is not None else services.phantom_lockouts.locked_until(key, now)
    )
    if locked_until is not None and locked_until > now:
        await emit(
            ctx,
            AuthEventType.LOGIN_FAILED,
            user_id=str(user.id) if user else None,
            success=False,
            reason="locked",
        )
        raise AccountLocked(retry_after=(locked_until - now).total_seconds())
    if user is None or not verification.ok:
        if user is not None:
            await record_failure(ctx, user, now)
        else:
            services.phantom_lockouts.record_failure(
                key, now, threshold=settings.lockout_threshold, minutes=settings.lockout_minutes
            )
        await emit(
            ctx,
            AuthEventType.LOGIN_FAILED,
            user_id=str(user.id) if user else None,
            success=False,
            reason="invalid_credentials",
        )
        raise InvalidCredentials()
    if verification.needs_rehash:
        await User.filter(id=user.id).update(password_hash=await services.passwords.hash(password))
    services.limiter.reset("login", key)
    return await start_session(ctx, user, method="password", remember=remember)


async def record_failure(ctx: RequestContext, user: User, now: dt.datetime) -> None:
    """Count a failed password or second-factor code; at the threshold, lock the account
    and reset the count."""
    settings = ctx.services.settings
    await User.filter(id=user.id).update(failed_logins=F("failed_logins") + 1)
    failures = await User.filter(id=user.id).first().values_list("failed_logins", flat=True)
    if settings.lockout_threshold and (failures or 0) >= settings.lockout_threshold:
        locked_until = now + dt.timedelta(minutes=settings.lockout_minutes)
        await User.filter(id=user.id).update(locked_until=locked_until, failed_logins=0)
        await emit(
            ctx,
            AuthEventType.ACCOUNT_LOCKED,
            user_id=str(user.id),
            success=False,
            minutes=settings.lockout_minutes,
        )


@dataclass
class _Rotation:
    session: Session | None = None
    reused: Session | None = None


async def refresh(ctx: RequestContext, *, refresh_token: str) -> AuthOutcome:
    """Exchange a refresh token for new tokens; the old one dies.

    Rotation is one conditional UPDATE, so parallel refreshes with one token yield at most
    one success. Presenting a used token revokes its whole session (reuse detection) and
    emits REFRESH_REUSE_DETECTED. Raises INVALID_TOKEN for anything not live.
    """
    services = ctx.services
    await spend(ctx, "refresh_ip", ctx.ip_address)
    token_digest = digest(refresh_token)
    now = services.clock.now()
    new_token = new_opaque_token()
    rotation = _Rotation()
    async with in_transaction():
        claimed = await RefreshToken.filter(
            digest=token_digest, used_at=None, expires_at__gt=now
        ).update(used_at=now)
        row = await RefreshToken.get_or_none(digest=token_digest).select_related("session")
        if row is not None and claimed == 1:
            session = row.session
            if session.revoked_at is None and session.expires_at > now:
                await RefreshToken.create(
                    session_id=session.id,
                    digest=digest(new_token),
                    created_at=now,
                    expires_at=session.expires_at,
                )
                await Session.filter(id=session.id).update(last_seen_at=now)
                session.last_seen_at = now
                rotation.session = session
        elif row is not None and row.used_at is not None and row.session.revoked_at is None:
            await Session.filter(id=row.session.id).update(revoked_at=now)
            rotation.reused = row.session
    if rotation.reused is not None:
        await emit(
            ctx,
            AuthEventType.REFRESH_REUSE_DETECTED,
            user_id=str(rotation.reused.user_id),
            session_id=str(rotation.reused.id),
            success=False,
        )
        raise InvalidToken()
    session = rotation.session
    if session is None:
        raise InvalidToken()
    user = await User.get_or_none(id=session.user_id, deleted_at=None)
    if user is None:
        raise InvalidToken()
    view = await UserView.load(user)
    session_view = SessionView.of(session, current_id=str(session.id))
    await emit(ctx, AuthEventType.TOKEN_REFRESHED, user_id=view.id, session_id=session_view.id)
    return _issued(ctx, view, session_view, new_token, now)


async def revoke_sessions(
    ctx: RequestContext,
    user_id: str,
    *,
    only: str | None = None,
    keep: str | None = None,
) -> int:
    """Revoke the user's live sessions (just ``only``, or all but ``keep``); returns how many.

    Emits no event; callers emit the one that names why.
    """
    now = ctx.services.clock.now()
    query = Session.filter(user_id=user_id, revoked_at=None, expires_at__gt=now)
    if only is not None:
        query = query.filter(id=only)
    if keep is not None:
        query = query.exclude(id=keep)
    count = await query.update(revoked_at=now)
    ctx.services.principals.invalidate_user(user_id)
    return count


async def logout(ctx: RequestContext) -> bool:
    """End the caller's current session; its access and refresh tokens die at once."""
    principal = ctx.require_principal()
    await revoke_sessions(ctx, principal.user.id, only=principal.session.id)
    await emit(
        ctx, AuthEventType.LOGOUT, user_id=principal.user.id, session_id=principal.session.id
    )
    return True


async def logout_all(ctx: RequestContext) -> int:
    """End every session of the caller, the current one included; returns how many."""
    principal = ctx.require_principal()
    count = await revoke_sessions(ctx, principal.user.id)
    await emit(
        ctx,
        AuthEventType.LOGOUT,
        user_id=principal.user.id,
        session_id=principal.session.id,
        scope="all",
        sessions=count,
    )
    return count


async def revoke_session(ctx: RequestContext, *, session_id: str) -> bool:
    """End one of the caller's own sessions; NOT_FOUND for any other id."""
    principal = ctx.require_principal()
    try:
        target = str(uuid.UUID(session_id))
    except ValueError:
        raise NotFound("Session not found.") from None
    if not await Session.exists(id=target, user_id=principal.user.id, revoked_at=None):
        raise NotFound("Session not found.")
    await revoke_sessions(ctx, principal.user.id, only=target)
    await emit(ctx, AuthEventType.SESSION_REVOKED, user_id=principal.user.id, session_id=target)
    return True


async def list_sessions(ctx: RequestContext, user_id: str) -> list[SessionView]:
    """The live sessions of ``user_id``, newest first, marking the caller's current one."""
    now = ctx.services.clock.now()
    current = ctx.principal.session.id if ctx.principal else None
    rows = await Session.filter(user_id=user_id, revoked_at=None, expires_at__gt=now).order_by(
        "-created_at"
    )
    return [SessionView.of(row, current_id=current) for row in rows]


async def my_sessions(ctx: RequestContext) -> list[SessionView]:
    """The caller's live sessions."""
    principal = ctx.require_principal()
    return await list_sessions(ctx, principal.user.id)


@dataclass(frozen=True)
class SessionStatusView:
    """``ok`` | ``email_not_verified`` | ``anonymous`` (2fa states come with 2FA)."""

    status: str
    claims: dict[str, Any] | None


def session_status(ctx: RequestContext) -> SessionStatusView:
    """Where the caller stands, with the verified claims of their access token."""
    principal = ctx.principal
    if principal is None:
        return SessionStatusView(status="anonymous", claims=None)
    settings = ctx.services.settings
    if settings.require_email_verification and not principal.user.email_verified:
        return SessionStatusView(status="email_not_verified", claims=dict(principal.claims))
    return SessionStatusView(status="ok", claims=dict(principal.claims))
