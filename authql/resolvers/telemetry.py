"""Live auth events for subscribers: admins see everyone's, others only their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from authql.context import Principal, RequestContext
from authql.errors import Forbidden
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
