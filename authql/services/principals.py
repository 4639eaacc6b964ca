"""Cached user and session state for the authenticated hot path.

An authenticated request needs three facts: the token is genuine (cached by the token
service), its session is still live, and who the user is. The last two are cached here so a
warm ``me`` query touches no database. Correctness comes from invalidation, not expiry: the
event bus calls ``on_event`` synchronously for every state-changing event, before the
publishing request returns, so a logout holds on the very next request. The short TTL only
bounds staleness across processes until the cross-instance bus delivers the same events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from authql.models import Session, User
from authql.services.events import STATE_CHANGING, AuthEvent
from authql.views import SessionView, UserView


class PrincipalCache:
    """Session and user snapshots by id, dropped on every state-changing event."""

    def __init__(self, ttl: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._monotonic = monotonic
        self._users: dict[str, tuple[float, UserView]] = {}
        self._sessions: dict[str, tuple[float, SessionView]] = {}
        self._sessions_by_user: dict[str, set[str]] = {}
        # Bumped on every invalidation: a read that started before one must not be cached,
        # or a logout racing that read would be forgotten until the entry expired.
        self._generation = 0

    async def session(self, session_id: str) -> SessionView | None:
        """The session ``session_id`` (revoked or not), or None if it does not exist."""
        hit = self._sessions.get(session_id)
        if hit is not None and hit[0] > self._monotonic():
            return hit[1]
        generation = self._generation
        try:
            row = await Session.get_or_none(id=uuid.UUID(session_id))
        except ValueError:
            return None
        if row is None:
            return None
        view = SessionView.of(row)
        if generation == self._generation:
            self._bound()
            self._sessions[session_id] = (self._monotonic() + self._ttl, view)
            self._sessions_by_user.setdefault(view.user_id, set()).add(session_id)
        return view

    async def user(self, user_id: str) -> UserView | None:
        """The user ``user_id``, or None if it does not exist."""
        hit = self._users.get(user_id)
        if hit is not None and hit[0] > self._monotonic():
            return hit[1]
        generation = self._generation
        try:
            row = await User.get_or_none(id=uuid.UUID(user_id))
        except ValueError:
            return None
        if row is None:
            return None
        view = await UserView.load(row)
        if generation == self._generation:
            self._bound()
            self._users[user_id] = (self._monotonic() + self._ttl, view)
        return view

    def _bound(self, limit: int = 100_000) -> None:
        """Keep memory bounded: past ``limit`` entries, start over (entries are re-read)."""
        if len(self._sessions) > limit or len(self._users) > limit:
            self._sessions.clear()
            self._users.clear()
            self._sessions_by_user.clear()

    def invalidate_user(self, user_id: str) -> None:
        """Forget the user and every cached session of theirs."""
        self._generation += 1
        self._users.pop(user_id, None)
        for session_id in self._sessions_by_user.pop(user_id, set()):
            self._sessions.pop(session_id, None)

    def on_event(self, event: AuthEvent) -> None:
        """Event-bus listener: drop whatever the event may have changed."""
        if event.type in STATE_CHANGING and event.user_id:
            self.invalidate_user(event.user_id)
        if event.session_id and event.type in STATE_CHANGING:
            self._generation += 1
            self._sessions.pop(event.session_id, None)
