"""Administration by offset pages and the role catalogue (role ``admin``): what node-auth's
admin REST API needs beyond the cursor-paged GraphQL reads in ``admin``.

- Accounts and live sessions listed by ``limit``/``offset`` with a ``filter`` substring, and
  how many match (node-auth's admin tables page that way).
- Any session revoked by its id (the GraphQL contract revokes per account only).
- The role catalogue: named roles with permissions (``Role`` rows). ``admin`` always exists
  and cannot be deleted. Granting a role does not require it to be in the catalogue (the
  contract's ``setUserRoles`` checks names for shape only); deleting a catalogue role also
  takes it from every account holding it, through ``admin.set_user_roles`` (one
  ROLES_CHANGED each), so nobody keeps a role that no longer exists.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from tortoise.expressions import Q

from authql.context import RequestContext
from authql.errors import Conflict, NotFound, ValidationFailed
from authql.models import Role, Session, User, UserRole
from authql.resolvers import admin
from authql.resolvers._common import emit
from authql.resolvers.sessions import revoke_sessions
from authql.services.events import AuthEventType
from authql.views import SessionView, UserView

MAX_PAGE = 100
MAX_OFFSET = 100_000
MAX_PERMISSIONS = 100
_ROLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_PERMISSION = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9_.:*/-]{0,127}$")


@dataclass(frozen=True)
class RoleView:
    """A catalogue role."""

    name: str
    permissions: list[str]


def _page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed("Invalid page size.", fields={"limit": f"Between 1 and {MAX_PAGE}."})
    if not 0 <= offset <= MAX_OFFSET:
        raise ValidationFailed("Invalid offset.", fields={"offset": f"0 to {MAX_OFFSET}."})


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def list_users_page(
    ctx: RequestContext, *, filter_: str | None = None, limit: int = 20, offset: int = 0
) -> tuple[list[UserView], int]:
    """Accounts oldest first whose email, username or name contains ``filter_`` (or whose
    id it is), and how many match."""
    ctx.require_admin()
    _page(limit, offset)
    query = User.all()
    term = (filter_ or "").strip()[:100]
    if term:
        match = Q(email__icontains=term) | Q(username__icontains=term) | Q(name__icontains=term)
        ident = _as_uuid(term)
        query = query.filter((match | Q(id=ident)) if ident else match)
    total = await query.count()
    rows = await query.order_by("created_at", "id").offset(offset).limit(limit)
    return [await UserView.load(row) for row in rows], total


async def list_live_sessions(
    ctx: RequestContext, *, filter_: str | None = None, limit: int = 20, offset: int = 0
) -> tuple[list[SessionView], int]:
    """Every account's live sessions, newest first, matching ``filter_`` (a user id, or a
    substring of the ip address or the account's email), and how many match."""
    principal = ctx.require_admin()
    _page(limit, offset)
    now = ctx.services.clock.now()
    query = Session.filter(revoked_at=None, expires_at__gt=now)
    term = (filter_ or "").strip()[:100]
    if term:
        match = Q(ip_address__icontains=term) | Q(user__email__icontains=term)
        ident = _as_uuid(term)
        query = query.filter((match | Q(user_id=ident) | Q(id=ident)) if ident else match)
    total = await query.count()
    rows = await query.order_by("-created_at", "id").offset(offset).limit(limit)
    return [SessionView.of(row, current_id=principal.session.id) for row in rows], total


async def revoke_any_session(ctx: RequestContext, *, session_id: str) -> bool:
    """End one live session of any account (its tokens die at once); emits SESSION_REVOKED
    naming the admin. NOT_FOUND for an unknown, ended or malformed id."""
    principal = ctx.require_admin()
    ident = _as_uuid(session_id)
    now = ctx.services.clock.now()
    row = (
        await Session.get_or_none(id=ident, revoked_at=None, expires_at__gt=now) if ident else None
    )
    if row is None:
        raise NotFound("Session not found.")
    await revoke_sessions(ctx, str(row.user_id), only=str(row.id))
    await emit(
        ctx,
        AuthEventType.SESSION_REVOKED,
        user_id=str(row.user_id),
        session_id=str(row.id),
        actor=principal.user.id,
    )
    return True


# --- roles ----------------------------------------------------------------------------------


def _check_role_name(name: str) -> str:
    value = (name or "").strip()
    if not _ROLE_NAME.match(value):
        raise ValidationFailed(
            "Invalid role name.",
            fields={"name": "1-64 letters, digits, '_', '.', ':' or '-'."},
        )
    return value


def _check_permissions(permissions: Sequence[str] | None) -> list[str]:
    wanted = list(dict.fromkeys(str(each).strip() for each in permissions or ()))
    if len(wanted) > MAX_PERMISSIONS or not all(_PERMISSION.match(each) for each in wanted):
        raise ValidationFailed(
            "Invalid permissions.",
            fields={"permissions": f"At most {MAX_PERMISSIONS} names like 'users:read'."},
        )
    return wanted


async def list_roles(ctx: RequestContext) -> list[RoleView]:
    """The catalogue by name, ``admin`` included."""
    ctx.require_admin()
    rows = {row.name: row for row in await Role.all()}
    names = sorted(set(rows) | {admin.ADMIN_ROLE})
    return [
        RoleView(name=name, permissions=list(rows[name].permissions) if name in rows else [])
        for name in names
    ]


async def save_role(
    ctx: RequestContext, *, name: str, permissions: Sequence[str] | None = None
) -> RoleView:
    """Add a role to the catalogue, or replace the permissions of one already there."""
    ctx.require_admin()
    name = _check_role_name(name)
    wanted = _check_permissions(permissions)
    row, created = await Role.get_or_create(name=name, defaults={"permissions": wanted})
    if not created:
        row.permissions = wanted
        await row.save(update_fields=["permissions"])
    return RoleView(name=name, permissions=wanted)


async def delete_role(ctx: RequestContext, *, name: str) -> bool:
    """Remove a role from the catalogue and from every account holding it.

    NOT_FOUND for a role neither in the catalogue nor granted; CONFLICT for ``admin``.
    """
    ctx.require_admin()
    if name == admin.ADMIN_ROLE:
        raise Conflict("The admin role cannot be deleted.")
    deleted = await Role.filter(name=name).delete()
    holders = await UserRole.filter(role=name).values_list("user_id", flat=True)
    if not deleted and not holders:
        raise NotFound("Role not found.")
    for user_id in holders:
        roles = await UserRole.filter(user_id=user_id).values_list("role", flat=True)
        kept = [str(role) for role in roles if role != name]
        await admin.set_user_roles(ctx, user_id=str(user_id), roles=kept)
    return True


async def grant_role(ctx: RequestContext, *, user_id: str, role: str) -> UserView:
    """Add one role to an account (its other roles stay); see ``admin.set_user_roles``."""
    user = await _existing_user(ctx, user_id)
    if role in user.roles:
        return user
    return await admin.set_user_roles(ctx, user_id=user.id, roles=[*user.roles, role])


async def take_role(ctx: RequestContext, *, user_id: str, role: str) -> UserView:
    """Remove one role from an account (a role it does not hold: nothing changes)."""
    user = await _existing_user(ctx, user_id)
    if role not in user.roles:
        return user
    kept = [each for each in user.roles if each != role]
    return await admin.set_user_roles(ctx, user_id=user.id, roles=kept)


async def _existing_user(ctx: RequestContext, user_id: str) -> UserView:
    user = await admin.get_user(ctx, user_id=user_id)
    if user is None:
        raise NotFound("User not found.")
    return user
