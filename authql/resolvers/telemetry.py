"""Live auth events for subscribers: admins see everyone's, others only their own."""

from __future__ import annotations

from collections.abc import AsyncIterator

from authql.context import RequestContext
from authql.errors import Forbidden
from authql.services.events import AuthEvent, AuthEventType


async def auth_events(
    ctx: RequestContext,
    *,
    types: list[AuthEventType] | None = None,
    user_id: str | None = None,
) -> AsyncIterator[AuthEvent]:
    """Yield events as they are published, filtered to what the caller may see.

    Non-admins asking for another user's events get FORBIDDEN; without ``user_id`` they get
    their own. Ends when the caller's session is no longer live.
    """
    principal = ctx.require_principal()
    if not principal.is_admin:
        if user_id is not None and user_id != principal.user.id:
            raise Forbidden("You may only watch your own events.")
        user_id = principal.user.id
    wanted = set(types) if types else None
    async with ctx.services.events.subscribe() as queue:
        while True:
            event = await queue.get()
            if wanted is not None and event.type not in wanted:
                continue
            if user_id is not None and event.user_id != user_id:
                continue
            yield event
