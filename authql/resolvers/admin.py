"""Administration (role ``admin``): account search and lookup, the audit log, roles, locks
and session revocation.

Every change an admin makes is itself an audit event naming the target account
(``user_id``) and the admin (``detail.actor``). Those events are state-changing, so the
principal cache drops the target's cached account and sessions before the mutation returns:
the target's very next request sees the new roles, the lock or the revocation.

Choices:
- ``lock_user`` without ``minutes`` locks until ``unlock_user`` (``locked_until`` is then
  ``UNTIL_UNLOCKED``, far in the future); a lock also revokes every session of the account,
  so it holds at once and not only for the next sign-in. An admin cannot lock themselves.
- ``set_user_roles`` replaces the account's roles. Names are checked for shape only (the
  contract has no role catalogue to check against). It refuses (CONFLICT) to take the
  ``admin`` role from the last account holding it that is not deleted; the check runs in
  the same transaction as the change, with the admin grants locked where the database
  supports it, so two admins demoting themselves at once cannot both succeed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from authql.context import RequestContext
from authql.errors import Conflict, NotFound, ValidationFailed
from authql.models import AuthEventRecord, User, UserRole
from authql.resolvers._common import emit
from authql.resolvers.sessions import list_sessions, revoke_sessions
from authql.services.events import AuthEvent, AuthEventType
from authql.views import SessionView, UserView

MAX_PAGE = 100
ADMIN_ROLE = "admin"
MAX_ROLES = 32
#: Longest lock an admin may give with a duration (a year); longer means "until unlocked".
MAX_LOCK_MINUTES = 366 * 24 * 60
#: ``locked_until`` of an account locked until an admin unlocks it.
UNTIL_UNLOCKED = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)

_ROLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


@dataclass(frozen=True)
class Page:
    """One page of a cursor-paginated listing."""

    items: list[tuple[str, UserView]]
    has_next_page: bool
    end_cursor: str | None
    total_count: int


def _encode_cursor(moment: dt.datetime, ident: uuid.UUID | str) -> str:
    raw = f"{moment.isoformat()}|{ident}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _cursor(user: User) -> str:
    return _encode_cursor(user.created_at, user.id)


def _decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        created, _, ident = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        moment = dt.datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("naive cursor")
        return moment, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed("Invalid cursor.", fields={"after": "Invalid cursor."}) from None


def _check_page_size(first: int) -> None:
    if not 1 <= first <= MAX_PAGE:
        raise ValidationFailed("Invalid page size.", fields={"first": f"Between 1 and {MAX_PAGE}."})


async def list_users(
    ctx: RequestContext,
    *,
    search: str | None = None,
    role: str | None = None,
    first: int = 20,
    after: str | None = None,
) -> Page:
    """Accounts oldest first, filtered by a substring of email/username/name and a role."""
    ctx.require_admin()
    _check_page_size(first)
    query = User.all()
    if search:
        term = search.strip()[:100]
        query = query.filter(
            Q(email__icontains=term) | Q(username__icontains=term) | Q(name__icontains=term)
        )
    if role:
        query = query.filter(role_grants__role=role)
    total = await query.count()
    if after:
        created, ident = _decode_cursor(after)
        query = query.filter(Q(created_at__gt=created) | Q(created_at=created, id__gt=ident))
    rows = await query.order_by("created_at", "id").limit(first + 1)
    page = rows[:first]
    items = [(_cursor(row), await UserView.load(row)) for row in page]
    return Page(
        items=items,
        has_next_page=len(rows) > first,
        end_cursor=items[-1][0] if items else None,
        total_count=total,
    )


async def get_user(ctx: RequestContext, *, user_id: str) -> UserView | None:
    """One account by id (soft-deleted ones included), or None."""
    ctx.require_admin()
    try:
        row = await User.get_or_none(id=uuid.UUID(user_id))
    except ValueError:
        return None
    return await UserView.load(row) if row else None


async def _target(user_id: str) -> User:
    """The account an admin action is about (soft-deleted ones included), or NOT_FOUND."""
    try:
        row = await User.get_or_none(id=uuid.UUID(user_id))
    except ValueError:
        row = None
    if row is None:
        raise NotFound("User not found.")
    return row


async def _reloaded(user_id: uuid.UUID) -> UserView:
    return await UserView.load(await User.get(id=user_id))


async def user_sessions(ctx: RequestContext, *, user_id: str) -> list[SessionView]:
    """The account's live sessions, newest first; NOT_FOUND for an unknown account."""
    ctx.require_admin()
    user = await _target(user_id)
    return await list_sessions(ctx, str(user.id))


@dataclass(frozen=True)
class EventPage:
    """One page of the audit log, newest first."""

    items: list[tuple[str, AuthEvent]]
    has_next_page: bool
    end_cursor: str | None


async def audit_events(
    ctx: RequestContext,
    *,
    user_id: str | None = None,
    types: Sequence[AuthEventType] | None = None,
    first: int = 50,
    after: str | None = None,
) -> EventPage:
    """The audit log newest first, optionally for one account and some event types.

    The cursor is the (time, id) of the last event seen, so events recorded while paging
    appear on no later page and none is skipped or repeated. The account need not exist
    any more (the log outlives purged accounts). VALIDATION_ERROR for ``first`` outside
    1..100, a malformed ``userId`` or a cursor the server did not issue.
    """
    ctx.require_admin()
    _check_page_size(first)
    query = AuthEventRecord.all()
    if user_id is not None:
        try:
            query = query.filter(user_id=uuid.UUID(user_id))
        except ValueError:
            raise ValidationFailed("Invalid user id.", fields={"userId": "Not an id."}) from None
    if types:
        query = query.filter(type__in=sorted({kind.value for kind in types}))
    if after:
        at, ident = _decode_cursor(after)
        query = query.filter(Q(at__lt=at) | Q(at=at, id__lt=ident))
    rows = await query.order_by("-at", "-id").limit(first + 1)
    items = [(_encode_cursor(row.at, row.id), AuthEvent.from_record(row)) for row in rows[:first]]
    return EventPage(
        items=items,
        has_next_page=len(rows) > first,
        end_cursor=items[-1][0] if items else None,
    )


def _check_roles(roles: Sequence[str]) -> list[str]:
    wanted = sorted({role.strip() for role in roles})
    if len(wanted) > MAX_ROLES:
        raise ValidationFailed("Too many roles.", fields={"roles": f"At most {MAX_ROLES}."})
    bad = [role for role in wanted if not _ROLE_NAME.match(role)]
    if bad:
        raise ValidationFailed(
            "Invalid role name.",
            fields={
                "roles": "1-64 letters, digits, '_', '.', ':' or '-', starting with a "
                "letter or digit."
            },
        )
    return wanted


async def set_user_roles(ctx: RequestContext, *, user_id: str, roles: Sequence[str]) -> UserView:
    """Replace the account's roles; emits ROLES_CHANGED (with what was added and removed).

    VALIDATION_ERROR for a malformed role name, NOT_FOUND for an unknown account, CONFLICT
    when it would leave no account with the admin role.
    """
    principal = ctx.require_admin()
    wanted = _check_roles(roles)
    user = await _target(user_id)
    async with in_transaction():
        held = set(await UserRole.filter(user_id=user.id).values_list("role", flat=True))
        added = sorted(set(wanted) - held)
        removed = sorted(held - set(wanted))
        if ADMIN_ROLE in removed:
            # Lock every admin grant first (PostgreSQL), so a concurrent demotion waits
            # and then counts what this one left.
            await UserRole.filter(role=ADMIN_ROLE).select_for_update().only("id")
        if removed:
            await UserRole.filter(user_id=user.id, role__in=removed).delete()
        for role in added:
            await UserRole.create(user_id=user.id, role=role)
        if ADMIN_ROLE in removed and not await UserRole.exists(
            role=ADMIN_ROLE, user__deleted_at=None
        ):
            raise Conflict("The last administrator cannot lose the admin role.")
    await emit(
        ctx,
        AuthEventType.ROLES_CHANGED,
        user_id=str(user.id),
        actor=principal.user.id,
        roles=wanted,
        added=added,
        removed=removed,
    )
    return await _reloaded(user.id)


async def lock_user(ctx: RequestContext, *, user_id: str, minutes: int | None = None) -> UserView:
    """Refuse the account's sign-ins for ``minutes`` (or until unlocked) and end its
    sessions now; emits ACCOUNT_LOCKED.

    VALIDATION_ERROR for ``minutes`` outside 1..MAX_LOCK_MINUTES, NOT_FOUND for an unknown
    account, CONFLICT for the admin's own account.
    """
    principal = ctx.require_admin()
    if minutes is not None and not 1 <= minutes <= MAX_LOCK_MINUTES:
        raise ValidationFailed(
            "Invalid lock duration.",
            fields={"minutes": f"Between 1 and {MAX_LOCK_MINUTES}; omit to lock until unlocked."},
        )
    user = await _target(user_id)
    if str(user.id) == principal.user.id:
        raise Conflict("Admins cannot lock their own account.")
    now = ctx.services.clock.now()
    until = UNTIL_UNLOCKED if minutes is None else now + dt.timedelta(minutes=minutes)
    async with in_transaction():
        await User.filter(id=user.id).update(locked_until=until)
        revoked = await revoke_sessions(ctx, str(user.id))
    await emit(
        ctx,
        AuthEventType.ACCOUNT_LOCKED,
        user_id=str(user.id),
        actor=principal.user.id,
        minutes=minutes,
        sessions_revoked=revoked,
    )
    return await _reloaded(user.id)


async def unlock_user(ctx: RequestContext, *, user_id: str) -> UserView:
    """Lift any lock (an admin's or the failed-login lockout) and forget the failure count;
    emits ACCOUNT_UNLOCKED. NOT_FOUND for an unknown account."""
    principal = ctx.require_admin()
    user = await _target(user_id)
    await User.filter(id=user.id).update(locked_until=None, failed_logins=0)
    await emit(
        ctx,
        AuthEventType.ACCOUNT_UNLOCKED,
        user_id=str(user.id),
        actor=principal.user.id,
    )
    return await _reloaded(user.id)


async def revoke_user_sessions(ctx: RequestContext, *, user_id: str) -> int:
    """End every live session of the account (their tokens die at once); how many.
    Emits SESSION_REVOKED. NOT_FOUND for an unknown account."""
    principal = ctx.require_admin()
    user = await _target(user_id)
    revoked = await revoke_sessions(ctx, str(user.id))
    await emit(
        ctx,
        AuthEventType.SESSION_REVOKED,
        user_id=str(user.id),
        actor=principal.user.id,
        scope="all",
        sessions=revoked,
    )
    return revoked
