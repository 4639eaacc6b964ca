"""Live streams for subscribers (auth events, session changes, metrics) and login history.

Every stream re-checks its caller while it runs: on each event and at least every
``RECHECK_SECONDS`` (sooner when the access token is about to expire). When the token has
expired, the session is revoked or the account is gone, the stream ends and reports
``StreamEnd.SIGNED_OUT`` through ``on_end``; when the caller is still signed in but has lost
the right to what it watches (an admin demoted mid-stream), ``StreamEnd.FORBIDDEN``. The
transport decides what an ending means (the websocket view closes the connection with
4401 / 4403). Nothing is delivered after the check fails, so no event outlives its right to
be seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from authql.context import Principal, RequestContext
from authql.errors import Forbidden, RateLimited, ValidationFailed
from authql.models import AuthEventRecord, Session
from authql.resolvers.metrics import MetricsSnapshotView, read_snapshot
from authql.services.events import STATE_CHANGING, AuthEvent, AuthEventType
from authql.views import SessionView

#: How often an idle stream re-checks that its caller may still listen (tests lower it).
RECHECK_SECONDS = 2.0

#: ``metrics(intervalSeconds)`` bounds.
MIN_INTERVAL_SECONDS = 1
MAX_INTERVAL_SECONDS = 3600

#: SessionEvent.type values.
CREATED = "CREATED"
REFRESHED = "REFRESHED"
REVOKED = "REVOKED"


class StreamEnd(enum.Enum):
    """Why a stream stopped on its own (the client did not ask it to)."""

    SIGNED_OUT = "SIGNED_OUT"  # token expired, session revoked or account gone
    FORBIDDEN = "FORBIDDEN"  # still signed in, but no longer allowed to watch this


OnEnd = Callable[[StreamEnd], None]


@dataclass(frozen=True)
class SessionEventView:
    """A change to one of the caller's sessions."""

    type: str
    session: SessionView
    at: dt.datetime


class SubscriptionSlots:
    """Live streams per user in this process, capped so one account cannot exhaust memory
    by opening many sockets (each socket has its own per-connection cap too)."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._held: dict[str, int] = {}

    def held(self, user_id: str) -> int:
        return self._held.get(user_id, 0)

    @contextlib.contextmanager
    def hold(self, user_id: str) -> Iterator[None]:
        """One slot for the duration of a stream; RATE_LIMITED when the user has none left."""
        if self.held(user_id) >= self.per_user:
            raise RateLimited("Too many live subscriptions for this account.")
        self._held[user_id] = self.held(user_id) + 1
        try:
            yield
        finally:
            left = self._held.get(user_id, 1) - 1
            if left > 0:
                self._held[user_id] = left
            else:
                self._held.pop(user_id, None)


@contextlib.contextmanager
def _slot(slots: SubscriptionSlots | None, user_id: str) -> Iterator[None]:
    if slots is None:
        yield
    else:
        with slots.hold(user_id):
            yield


async def still_signed_in(ctx: RequestContext, principal: Principal) -> bool:
    """True while the caller's token is unexpired, its session live and its user present.

    Access tokens carry ``exp``; a principal from an opaque session cookie has none and
    lives as long as its session.
    """
    now = ctx.services.clock.now()
    if "exp" in principal.claims:
        exp = principal.claims["exp"]
        if not isinstance(exp, int | float) or exp <= now.timestamp():
            return False
    session = await ctx.services.principals.session(principal.session.id)
    if session is None or not session.active_at(now) or session.user_id != principal.user.id:
        return False
    user = await ctx.services.principals.user(principal.user.id)
    return user is not None and user.deleted_at is None


async def _verdict(
    ctx: RequestContext, principal: Principal, *, needs_admin: bool
) -> StreamEnd | None:
    """Why the stream must end now, or None while the caller may keep listening."""
    if not await still_signed_in(ctx, principal):
        return StreamEnd.SIGNED_OUT
    if needs_admin:
        user = await ctx.services.principals.user(principal.user.id)
        if user is None or "admin" not in user.roles:
            return StreamEnd.FORBIDDEN
    return None


def _wait_seconds(ctx: RequestContext, principal: Principal) -> float:
    """Until the next re-check: RECHECK_SECONDS, or just past the token's expiry if sooner."""
    exp = principal.claims.get("exp")
    if isinstance(exp, int | float):
        left = exp - ctx.services.clock.now().timestamp()
        return max(0.0, min(RECHECK_SECONDS, left + 0.05))
    return RECHECK_SECONDS


async def _next_event(queue: asyncio.Queue[AuthEvent], seconds: float) -> AuthEvent | None:
    """The next published event, or None when ``seconds`` pass first."""
    try:
        return await asyncio.wait_for(queue.get(), timeout=seconds)
    except TimeoutError:
        return None


def _ended(on_end: OnEnd | None, reason: StreamEnd) -> None:
    if on_end is not None:
        on_end(reason)


async def auth_events(
    ctx: RequestContext,
    *,
    types: list[AuthEventType] | None = None,
    user_id: str | None = None,
    on_end: OnEnd | None = None,
    slots: SubscriptionSlots | None = None,
) -> AsyncIterator[AuthEvent]:
    """Yield events as they are published, filtered to what the caller may see.

    Non-admins asking for another user's events get FORBIDDEN; without ``user_id`` they get
    their own. An admin watching anyone but themself must stay an admin: a demotion ends the
    stream (FORBIDDEN) before another event is delivered.
    """
    principal = ctx.require_principal()
    if not principal.is_admin:
        if user_id is not None and user_id != principal.user.id:
            raise Forbidden("You may only watch your own events.")
        user_id = principal.user.id
    needs_admin = user_id != principal.user.id
    wanted = set(types) if types else None
    with _slot(slots, principal.user.id):
        async with ctx.services.events.subscribe() as queue:
            while True:
                event = await _next_event(queue, _wait_seconds(ctx, principal))
                end = await _verdict(ctx, principal, needs_admin=needs_admin)
                if end is not None:
                    _ended(on_end, end)
                    return
                if event is None:
                    continue
                if wanted is not None and event.type not in wanted:
                    continue
                if user_id is not None and event.user_id != user_id:
                    continue
                yield event


async def session_events(
    ctx: RequestContext,
    *,
    on_end: OnEnd | None = None,
    slots: SubscriptionSlots | None = None,
) -> AsyncIterator[SessionEventView]:
    """Yield CREATED / REFRESHED / REVOKED for the caller's own sessions.

    Sign-ins announce their session (LOGIN_SUCCEEDED names it) and refreshes theirs
    (TOKEN_REFRESHED). Revocations come from many paths (logout, logout-all, revoke, reuse
    detection, password change or reset, 2FA enrolment, account deletion, admin actions),
    several of which revoke sessions in bulk without naming them, so any state-changing
    event of the caller re-reads the sessions this stream knows to be live and reports
    those now revoked. When the caller's own session is revoked it gets that REVOKED event
    (last), then the stream ends (SIGNED_OUT).
    """
    principal = ctx.require_principal()
    me, mine = principal.user.id, principal.session.id
    with _slot(slots, me):
        async with ctx.services.events.subscribe() as queue:
            now = ctx.services.clock.now()
            live = {
                str(sid)
                for sid in await Session.filter(
                    user_id=me, revoked_at=None, expires_at__gt=now
                ).values_list("id", flat=True)
            }
            live.add(mine)
            while True:
                event = await _next_event(queue, _wait_seconds(ctx, principal))
                if event is not None and event.user_id == me:
                    for change in await _changes(event, me, mine, live):
                        yield change
                end = await _verdict(ctx, principal, needs_admin=False)
                if end is not None:
                    # A revocation seen only by the re-check (no event reached this
                    # process) is still reported before the stream ends.
                    for change in await _revoked(me, mine, live):
                        yield change
                    _ended(on_end, end)
                    return


async def _changes(event: AuthEvent, me: str, mine: str, live: set[str]) -> list[SessionEventView]:
    """What ``event`` (one of the caller's) changed among the caller's sessions."""
    if event.type in (AuthEventType.LOGIN_SUCCEEDED, AuthEventType.TOKEN_REFRESHED):
        if event.session_id is None:
            return []
        row = await _own_session(me, event.session_id)
        if row is None:
            return []
        live.add(str(row.id))
        kind = CREATED if event.type is AuthEventType.LOGIN_SUCCEEDED else REFRESHED
        view = SessionView.of(row, current_id=mine)
        return [SessionEventView(type=kind, session=view, at=event.at)]
    if event.type in STATE_CHANGING:
        return await _revoked(me, mine, live)
    return []


async def _own_session(me: str, session_id: str) -> Session | None:
    try:
        return await Session.get_or_none(id=session_id, user_id=me)
    except (ValueError, TypeError):
        return None


async def _revoked(me: str, mine: str, live: set[str]) -> list[SessionEventView]:
    """REVOKED for each session in ``live`` that is now revoked (dropped from ``live``),
    oldest revocation first and the caller's own session last."""
    if not live:
        return []
    rows = await Session.filter(user_id=me, id__in=list(live), revoked_at__isnull=False)
    rows.sort(key=lambda row: (str(row.id) == mine, row.revoked_at))
    changes = []
    for row in rows:
        live.discard(str(row.id))
        changes.append(
            SessionEventView(
                type=REVOKED,
                session=SessionView.of(row, current_id=mine),
                at=row.revoked_at or row.last_seen_at,
            )
        )
    return changes


async def metrics(
    ctx: RequestContext,
    *,
    interval_seconds: int = 5,
    on_end: OnEnd | None = None,
    slots: SubscriptionSlots | None = None,
) -> AsyncIterator[MetricsSnapshotView]:
    """Admins: a snapshot of the last ``interval_seconds`` at once and then every
    ``interval_seconds``. The caller is re-checked between snapshots as often as any other
    stream, so a long interval never delays the end of a revoked or demoted admin's stream.
    """
    principal = ctx.require_admin()
    if not MIN_INTERVAL_SECONDS <= interval_seconds <= MAX_INTERVAL_SECONDS:
        raise ValidationFailed(
            "Invalid interval.",
            fields={
                "intervalSeconds": f"Between {MIN_INTERVAL_SECONDS} and {MAX_INTERVAL_SECONDS}."
            },
        )
    loop = asyncio.get_running_loop()
    with _slot(slots, principal.user.id):
        async with ctx.services.events.subscribe() as queue:
            due = loop.time()
            while True:
                end = await _verdict(ctx, principal, needs_admin=True)
                if end is not None:
                    _ended(on_end, end)
                    return
                if loop.time() >= due:
                    yield await read_snapshot(ctx, interval_seconds)
                    due = loop.time() + interval_seconds
                # Wake for the next snapshot, the next re-check, or an event of the caller's
                # own account (a logout or demotion), whichever comes first.
                while True:
                    timeout = min(due - loop.time(), _wait_seconds(ctx, principal))
                    event = await _next_event(queue, max(0.0, timeout))
                    if event is None or event.user_id == principal.user.id:
                        break


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
