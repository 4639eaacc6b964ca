"""Administration reads: account search and lookup (role ``admin``)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from dataclasses import dataclass

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from authql.context import RequestContext
from authql.errors import ValidationFailed
from authql.models import Session, User
from authql.views import UserView

MAX_PAGE = 100


@dataclass(frozen=True)
class Page:
    """One page of a cursor-paginated listing."""

    items: list[tuple[str, UserView]]
    has_next_page: bool
    end_cursor: str | None
    total_count: int


def _cursor(user: User) -> str:
    raw = f"{user.created_at.isoformat()}|{user.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        created, _, ident = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        moment = dt.datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("naive cursor")
        return moment, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed("Invalid cursor.", fields={"after": "Invalid cursor."}) from None


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
    if not 1 <= first <= MAX_PAGE:
        raise ValidationFailed("Invalid page size.", fields={"first": f"Between 1 and {MAX_PAGE}."})
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


async def cleanup_sessions(ctx: RequestContext) -> int:
    """Delete sessions that have expired or were revoked (their refresh tokens go with
    them); returns how many. Admins only: deletion is irreversible."""
    ctx.require_admin()
    now = ctx.services.clock.now()
    dead = Q(expires_at__lte=now) | Q(revoked_at__isnull=False)
    # Counted first: sqlite's delete count includes the refresh tokens that cascade.
    async with in_transaction():
        count = await Session.filter(dead).count()
        await Session.filter(dead).delete()
    return count
