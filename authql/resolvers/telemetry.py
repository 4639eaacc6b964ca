"""Live auth events for subscribers: admins see everyone's, others only their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from authql.context import Principal, RequestContext
from authql.errors import Forbidden, ValidationFailed
from authql.models import AuthEventRecord
from authql.services.events import AuthEvent, AuthEventType

#: How often an idle stream re-checks that its caller may still listen.
RECHECK_SECONDS = 2.0


async def still_signed_in(ctx: RequestContext, principal: Principal) -> bool:
    """True while the caller's token is unexpired, its session live and its user present."""
    now = ctx.services.clock.now()
    exp = principal.claims.get("exp")
    if not isinstance(exp, int) or exp <= now.timestamp():
        return False
    session = await ctx.services.principals.session(principal.session.id)
    if session is None or not session.active_at(now):
        return False
    user = await ctx.services.principals.user(principal.user.id)
    return user is not None and user.deleted_at is None


async def auth_events(
    ctx: RequestContext,
    *,
    types: list[AuthEventType] | None = None,
    user_id: str | None = None,
) -> AsyncIterator[AuthEvent]:
    """Yield events as they are published, filtered to what the caller may see.

    Non-admins asking for another user's events get FORBIDDEN; without ``user_id`` they get
    their own. The stream ends (the client receives ``complete``) within seconds of the
    caller's token expiring or session being revoked, and never delivers after that.
    """
    principal = ctx.require_principal()
    if not principal.is_admin:
        if user_id is not None and user_id != principal.user.id:
            raise Forbidden("You may only watch your own events.")
        user_id = principal.user.id
    wanted = set(types) if types else None
    async with ctx.services.events.subscribe() as queue:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=RECHECK_SECONDS)
            except TimeoutError:
                event = None
            if not await still_signed_in(ctx, principal):
                return
            if event is None:
                continue
            if wanted is not None and event.type not in wanted:
                continue
            if user_id is not None and event.user_id != user_id:
                continue
            yield event


async def my_events(
    ctx: RequestContext,
    *,
    types: list[AuthEventType] | None = None,
    offset: int = 0,
    limit: int = 20,
) -> list[AuthEvent]:
    """The caller's own audit events, newest first (login history)."""
    principal = ctx.require_principal()
    if not 1 <= limit <= 100 or offset < 0:
        raise ValidationFailed("Invalid page.", fields={"limit": "Between 1 and 100."})
    query = AuthEventRecord.filter(user_id=principal.user.id)
    if types:
        query = query.filter(type__in=[t.value for t in types])
    rows = await query.order_by("-at").offset(offset).limit(limit)
    return [AuthEvent.from_record(row) for row in rows]
