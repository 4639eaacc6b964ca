"""EventBus (persist, then listeners, then bounded subscribers) and the PrincipalCache it feeds."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from typing import Any

import pytest

from authql.models import AuthEventRecord, Session, User
from authql.services.events import STATE_CHANGING, AuthEvent, AuthEventType, EventBus
from authql.services.principals import PrincipalCache

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def _event(
    event_type: AuthEventType = AuthEventType.LOGIN_SUCCEEDED,
    user_id: str | None = None,
    session_id: str | None = None,
    **detail: Any,
) -> AuthEvent:
    return AuthEvent(
        type=event_type,
        at=NOW,
        user_id=user_id or str(uuid.uuid4()),
        session_id=session_id,
        ip_address="203.0.113.7",
        user_agent="pytest",
        detail=detail,
    )


async def _publish(bus: EventBus, event: AuthEvent) -> None:
    """Publish, failing the test (instead of hanging) if publish ever blocks."""
    await asyncio.wait_for(bus.publish(event), timeout=5)


# --- EventBus -------------------------------------------------------------------------------


async def test_publish_persists_the_event_in_the_audit_log() -> None:
    """Every published event becomes an AuthEventRecord with the same fields."""
    bus = EventBus()
    event = _event(AuthEventType.LOGIN_FAILED, reason="bad_password")
    event = AuthEvent(**{**event.__dict__, "success": False})
    await _publish(bus, event)
    record = await AuthEventRecord.get(id=event.id)
    assert record.type == "LOGIN_FAILED"
    assert record.at == NOW
    assert str(record.user_id) == event.user_id
    assert record.session_id is None
    assert record.ip_address == "203.0.113.7"
    assert record.user_agent == "pytest"
    assert record.success is False
    assert record.detail == {"reason": "bad_password"}


async def test_publish_delivers_to_subscribers() -> None:
    """A subscriber receives each event published while it is subscribed, in order."""
    bus = EventBus()
    first, second = _event(), _event(AuthEventType.LOGOUT)
    async with bus.subscribe() as queue:
        assert bus.subscriber_count == 1
        await _publish(bus, first)
        await _publish(bus, second)
        assert await asyncio.wait_for(queue.get(), 1) is first
        assert await asyncio.wait_for(queue.get(), 1) is second
    assert bus.subscriber_count == 0
    await _publish(bus, _event())  # nobody listening: still fine
    assert await AuthEventRecord.all().count() == 3


async def test_listeners_run_before_publish_returns() -> None:
    """Local listeners (the session cache) have seen the event by the time publish returns."""
    bus = EventBus()
    seen: list[AuthEvent] = []
    bus.add_listener(seen.append)
    event = _event(AuthEventType.SESSION_REVOKED)
    await _publish(bus, event)
    assert seen == [event]


async def test_a_failing_listener_does_not_stop_delivery(caplog: pytest.LogCaptureFixture) -> None:
    """One broken listener is logged; later listeners and subscribers still get the event."""
    bus = EventBus()
    seen: list[AuthEvent] = []

    def broken(event: AuthEvent) -> None:
        raise RuntimeError("boom")

    bus.add_listener(broken)
    bus.add_listener(seen.append)
    event = _event()
    with caplog.at_level(logging.ERROR, logger="authql.events"):
        async with bus.subscribe() as queue:
            await _publish(bus, event)
            assert queue.get_nowait() is event
    assert seen == [event]
    assert "LOGIN_SUCCEEDED" in caplog.text


async def test_nothing_is_delivered_when_persisting_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit log comes first: an event that could not be stored is not announced."""
    bus = EventBus()
    seen: list[AuthEvent] = []
    bus.add_listener(seen.append)

    async def failing_create(**_: Any) -> None:
        raise ConnectionError("database down")

    monkeypatch.setattr(AuthEventRecord, "create", failing_create)
    async with bus.subscribe() as queue:
        with pytest.raises(ConnectionError):
            await _publish(bus, _event())
        assert queue.empty()
    assert seen == []


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "new_password",
        "PasswordHash",
        "token",
        "refreshToken",
        "secret",
        "code",
        "digest",
    ],
)
async def test_secret_looking_detail_keys_are_refused(key: str) -> None:
    """A detail key that looks like a secret raises ValueError; nothing is stored or delivered."""
    bus = EventBus()
    seen: list[AuthEvent] = []
    bus.add_listener(seen.append)
    async with bus.subscribe() as queue:
        with pytest.raises(ValueError, match=key):
            await _publish(bus, _event(**{key: "hunter2", "reason": "x"}))
        assert queue.empty()
    assert seen == []
    assert await AuthEventRecord.all().count() == 0


async def test_a_full_subscriber_queue_drops_its_oldest_event_and_counts_it() -> None:
    """A slow subscriber loses its oldest events (counted); publish never waits for it."""
    bus = EventBus(queue_size=2)
    events = [_event() for _ in range(5)]
    async with bus.subscribe() as slow, bus.subscribe() as fast:
        received = []
        for event in events:
            await _publish(bus, event)  # would time out if publish blocked on `slow`
            received.append(fast.get_nowait())
        assert received == events  # the subscriber that keeps up loses nothing
        assert slow.qsize() == 2
        assert [slow.get_nowait(), slow.get_nowait()] == events[-2:]
    assert bus.dropped == 3
    assert await AuthEventRecord.all().count() == 5  # the audit log is complete regardless


async def test_publish_with_a_stalled_consumer_task_does_not_block() -> None:
    """Even with a subscriber task parked forever, many publishes complete promptly."""
    bus = EventBus(queue_size=1)
    parked = asyncio.Event()

    async def stalled() -> None:
        async with bus.subscribe():
            parked.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(stalled())
    try:
        await asyncio.wait_for(parked.wait(), 1)
        for _ in range(10):
            await _publish(bus, _event())
        assert bus.dropped == 9
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert bus.subscriber_count == 0


def test_state_changing_events_cover_revocations_and_account_changes() -> None:
    """Every event after which cached state may be wrong invalidates the cache."""
    for name in (
        "LOGOUT",
        "SESSION_REVOKED",
        "REFRESH_REUSE_DETECTED",
        "PASSWORD_CHANGED",
        "PASSWORD_RESET",
        "ACCOUNT_LOCKED",
        "ACCOUNT_DELETED",
        "ROLES_CHANGED",
        "PROFILE_UPDATED",
        "EMAIL_VERIFIED",
        "EMAIL_CHANGED",
    ):
        assert AuthEventType[name] in STATE_CHANGING, name
    for name in ("LOGIN_SUCCEEDED", "LOGIN_FAILED", "TOKEN_REFRESHED", "RATE_LIMITED"):
        assert AuthEventType[name] not in STATE_CHANGING, name


# --- PrincipalCache -------------------------------------------------------------------------


async def _user_with_session() -> tuple[str, str]:
    user = await User.create(email=f"{uuid.uuid4().hex[:8]}@example.com", name="Ada")
    session = await Session.create(
        user=user,
        method="password",
        created_at=NOW,
        last_seen_at=NOW,
        expires_at=NOW + dt.timedelta(days=14),
    )
    return str(user.id), str(session.id)


async def _revoke(session_id: str) -> None:
    await Session.filter(id=uuid.UUID(session_id)).update(revoked_at=NOW)


async def test_cache_serves_a_session_without_rereading() -> None:
    """A cached session view is served from memory until something invalidates it."""
    cache = PrincipalCache(ttl=60)
    user_id, session_id = await _user_with_session()
    view = await cache.session(session_id)
    assert view is not None and view.user_id == user_id and view.revoked_at is None
    await _revoke(session_id)  # a change the cache has not been told about
    cached = await cache.session(session_id)
    assert cached is not None and cached.revoked_at is None


async def test_state_changing_event_drops_the_users_cached_state() -> None:
    """After a state-changing event for the user, the next read sees the database."""
    cache = PrincipalCache(ttl=60)
    user_id, session_id = await _user_with_session()
    await cache.session(session_id)
    await cache.user(user_id)
    await _revoke(session_id)
    await User.filter(id=uuid.UUID(user_id)).update(name="Grace")
    cache.on_event(_event(AuthEventType.SESSION_REVOKED, user_id=user_id))
    view = await cache.session(session_id)
    assert view is not None and view.revoked_at is not None
    user = await cache.user(user_id)
    assert user is not None and user.name == "Grace"


async def test_other_events_and_other_users_keep_the_cache() -> None:
    """Events that change nothing, or concern someone else, leave cached state in place."""
    cache = PrincipalCache(ttl=60)
    user_id, session_id = await _user_with_session()
    await cache.session(session_id)
    await _revoke(session_id)
    cache.on_event(_event(AuthEventType.LOGIN_SUCCEEDED, user_id=user_id))
    cache.on_event(_event(AuthEventType.LOGOUT, user_id=str(uuid.uuid4())))
    view = await cache.session(session_id)
    assert view is not None and view.revoked_at is None


async def test_published_revocation_holds_on_the_next_read() -> None:
    """Wired to the bus, a revocation is visible as soon as publish returns."""
    bus = EventBus()
    cache = PrincipalCache(ttl=60)
    bus.add_listener(cache.on_event)
    user_id, session_id = await _user_with_session()
    await cache.session(session_id)
    await _revoke(session_id)
    await _publish(bus, _event(AuthEventType.LOGOUT, user_id=user_id, session_id=session_id))
    view = await cache.session(session_id)
    assert view is not None and view.revoked_at is not None


async def test_cache_entries_expire_after_the_ttl() -> None:
    """Without any event, cached state is re-read once the TTL has passed."""
    ticks = [0.0]
    cache = PrincipalCache(ttl=5, monotonic=lambda: ticks[0])
    _, session_id = await _user_with_session()
    await cache.session(session_id)
    await _revoke(session_id)
    ticks[0] = 4.9
    cached = await cache.session(session_id)
    assert cached is not None and cached.revoked_at is None
    ticks[0] = 5.1
    fresh = await cache.session(session_id)
    assert fresh is not None and fresh.revoked_at is not None


async def test_unknown_or_malformed_ids_are_none() -> None:
    """Ids that match nothing (or are not UUIDs) give None rather than an error."""
    cache = PrincipalCache(ttl=60)
    assert await cache.session(str(uuid.uuid4())) is None
    assert await cache.session("not-a-uuid") is None
    assert await cache.user(str(uuid.uuid4())) is None
    assert await cache.user("not-a-uuid") is None


async def test_a_read_racing_a_revocation_does_not_cache_stale_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A session read that began before a revocation must not re-fill the cache afterwards."""
    cache = PrincipalCache(ttl=60)
    user_id, session_id = await _user_with_session()
    read_done, release = asyncio.Event(), asyncio.Event()
    real_get_or_none = Session.get_or_none

    async def slow_read(*args: Any, **kwargs: Any) -> Session | None:
        row = await real_get_or_none(*args, **kwargs)  # snapshot taken before the revocation
        read_done.set()
        await release.wait()
        return row

    monkeypatch.setattr(Session, "get_or_none", slow_read)
    in_flight = asyncio.create_task(cache.session(session_id))
    await asyncio.wait_for(read_done.wait(), 5)
    await _revoke(session_id)
    cache.on_event(_event(AuthEventType.LOGOUT, user_id=user_id, session_id=session_id))
    release.set()
    await in_flight  # the request that was already running may see the old state...
    monkeypatch.undo()
    view = await cache.session(session_id)  # ...but the next one must not
    assert view is not None and view.revoked_at is not None, "stale session cached after logout"
