"""The event bus across processes, against real PostgreSQL and Redis servers.

Two ``EventBus`` instances, each with its own transport connection, stand for two authql
processes sharing one database (the suite's, where the audit log lives) and one channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from authql.services.event_transport import (
    CHANNEL,
    EventTransport,
    PostgresTransport,
    RedisTransport,
    asyncpg_dsn,
    build_transport,
)
from authql.services.events import AuthEvent, AuthEventType, EventBus
from authql.settings import ConfigError
from tests.servers import free_port, postgres_url, redis_url  # noqa: F401
from tests.support import LOGIN, PASSWORD, GraphQLClient

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
TIMEOUT = 5.0
#: Quick reconnects so the tests that cut connections stay fast.
FAST: dict[str, float] = {"backoff_initial": 0.05, "backoff_max": 0.5, "connect_timeout": 5.0}


def _event(event_type: AuthEventType = AuthEventType.LOGIN_SUCCEEDED, **detail: Any) -> AuthEvent:
    return AuthEvent(
        type=event_type,
        at=NOW,
        user_id=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        ip_address="203.0.113.7",
        user_agent="pytest",
        success=event_type is not AuthEventType.LOGIN_FAILED,
        detail=detail,
    )


@dataclass
class Peer:
    """One 'process': a bus, what its listeners heard and what its subscriber received."""

    bus: EventBus
    heard: list[AuthEvent] = field(default_factory=list)
    queue: asyncio.Queue[AuthEvent] | None = None

    async def next(self) -> AuthEvent:
        assert self.queue is not None
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)

    def pending(self) -> list[AuthEvent]:
        assert self.queue is not None
        drained = []
        while not self.queue.empty():
            drained.append(self.queue.get_nowait())
        return drained


def make_transport(kind: str, url: str, name: str, **options: float) -> EventTransport:
    """A transport of ``kind`` whose connections are tagged with ``name`` (to cut them)."""
    options = {**FAST, **options}
    if kind == "postgres":
        tag = f"authql-events-{name}"
        return PostgresTransport(asyncpg_dsn(url), application_name=tag, **options)
    return RedisTransport(url, client_name=f"authql-events-{name}", **options)


@pytest.fixture(params=["postgres", "redis"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(kind, server URL) for each real transport; only the server in use is started."""
    kind: str = request.param
    return kind, request.getfixturevalue(f"{kind}_url")


@contextlib.asynccontextmanager
async def peers(
    kind: str,
    url: str,
    *names: str,
    transport_options: dict[str, float] | None = None,
    **bus_options: Any,
) -> AsyncIterator[list[Peer]]:
    """Started buses, one per name, each subscribed and listening; always stopped."""
    started: list[Peer] = []
    async with contextlib.AsyncExitStack() as stack:
        for name in names:
            transport = make_transport(kind, url, name, **(transport_options or {}))
            bus = EventBus(transport=transport, **bus_options)
            peer = Peer(bus)
            bus.add_listener(peer.heard.append)
            peer.queue = await stack.enter_async_context(bus.subscribe())
            stack.push_async_callback(bus.stop)
            await bus.start()
            started.append(peer)
        yield started


async def publish(peer: Peer, event: AuthEvent) -> float:
    """Publish on ``peer``; fails (instead of hanging) if publish blocks. Returns the time."""
    started = time.perf_counter()
    await asyncio.wait_for(peer.bus.publish(event), TIMEOUT)
    return started


async def cut_connections(kind: str, url: str, name: str) -> None:
    """Have the server drop the transport connections tagged ``name`` (``%``: all of ours)."""
    if kind == "postgres":
        admin = await asyncpg.connect(asyncpg_dsn(url))
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name LIKE $1",
                f"authql-events-{name}",
            )
        finally:
            await admin.close()
    else:
        client = Redis.from_url(url)
        try:
            killed = 0
            for info in await client.client_list():
                wanted = name == "%" or info.get("name") == f"authql-events-{name}"
                if info.get("name", "").startswith("authql-events-") and wanted:
                    killed += await client.client_kill_filter(_id=info["id"])
        finally:
            await client.aclose()
    assert killed, "no transport connection to cut"


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def raw_listener(url: str) -> AsyncIterator[list[str]]:
    """The NOTIFY payloads on the channel, as any PostgreSQL client would see them."""
    payloads: list[str] = []
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.add_listener(CHANNEL, lambda *args: payloads.append(args[-1]))
        yield payloads
    finally:
        await connection.close()


# --- choosing a transport -------------------------------------------------------------------


def test_the_backend_setting_picks_the_transport() -> None:
    """memory keeps events in the process; postgres and redis:// connect the processes."""
    pg = "postgres://authql:pw@db.internal:5432/authql?minsize=1&maxsize=20"
    assert build_transport("memory", "sqlite://./data/authql.sqlite3") is None
    assert isinstance(build_transport("postgres", pg), PostgresTransport)
    assert isinstance(build_transport("redis://cache:6379/2", pg), RedisTransport)
    with pytest.raises(ConfigError, match="PostgreSQL"):
        build_transport("postgres", "sqlite://./data/authql.sqlite3")


def test_the_database_url_becomes_an_asyncpg_dsn() -> None:
    """postgres:// turns into postgresql://; Tortoise's pool options are dropped; ssl maps."""
    assert (
        asyncpg_dsn("postgres://u:p@h:5432/db?minsize=1&maxsize=5&application_name=x&ssl=true")
        == "postgresql://u:p@h:5432/db?application_name=x&sslmode=require"
    )
    assert asyncpg_dsn("asyncpg://u@h/db") == "postgresql://u@h/db"
    assert asyncpg_dsn("postgres://u@h/db?ssl=verify-full") == (
        "postgresql://u@h/db?sslmode=verify-full"
    )
    assert asyncpg_dsn("postgres://u@h/db?ssl=false") == "postgresql://u@h/db?sslmode=disable"
    assert asyncpg_dsn("postgresql://u@h/db?sslmode=verify-full") == (
        "postgresql://u@h/db?sslmode=verify-full"
    )


async def test_memory_bus_fans_out_within_the_process() -> None:
    """Without a transport, listeners and every subscriber get each event once, at once."""
    bus = EventBus(transport=build_transport("memory", ""))
    peer = Peer(bus)
    bus.add_listener(peer.heard.append)
    await bus.start()
    try:
        async with bus.subscribe() as first, bus.subscribe() as second:
            event = _event()
            await asyncio.wait_for(bus.publish(event), TIMEOUT)
            assert peer.heard == [event]
            assert first.get_nowait() is event and first.empty()
            assert second.get_nowait() is event and second.empty()
    finally:
        await bus.stop()


# --- two processes --------------------------------------------------------------------------


async def test_an_event_reaches_every_process_exactly_once(backend: tuple[str, str]) -> None:
    """An event published on A reaches B's listeners and subscribers once, with every field,
    and A's own once (its echo is ignored)."""
    kind, url = backend
    async with peers(kind, url, "a", "b") as (a, b):
        event = _event(AuthEventType.LOGIN_FAILED, reason="bad_password", attempt=3)
        sent = await publish(a, event)
        assert a.heard == [event]  # local delivery happened before publish returned
        received = await b.next()
        latency = time.perf_counter() - sent
        assert received == event  # id, type, at, user, session, ip, agent, success, detail
        assert received.detail == {"reason": "bad_password", "attempt": 3}
        # B answers; once A hears that, A's own echo (sent earlier) has come and gone.
        reply = _event(AuthEventType.LOGOUT)
        await publish(b, reply)
        assert await a.next() == event
        assert await a.next() == reply
        assert await b.next() == reply
        assert a.pending() == [] and a.heard == [event, reply]
        assert b.pending() == [] and b.heard == [event, reply]
        assert latency < 1.0


async def test_an_oversized_event_travels_by_id(postgres_url: str) -> None:  # noqa: F811
    """An event too big for one NOTIFY is announced by id; peers read it from the audit log
    and deliver it whole."""
    async with (
        raw_listener(postgres_url) as payloads,
        peers("postgres", postgres_url, "a", "b") as (
            a,
            b,
        ),
    ):
        small, big = _event(note="short"), _event(note="x" * 9000)
        await publish(a, small)
        await publish(a, big)
        assert await b.next() == small
        assert await b.next() == big
        await eventually(lambda: len(payloads) == 2, "two NOTIFY payloads")
    whole, by_id = (json.loads(payload) for payload in payloads)
    assert whole["event"]["detail"] == {"note": "short"}
    assert set(whole["event"]) == {
        "id",
        "type",
        "at",
        "user_id",
        "session_id",
        "ip_address",
        "user_agent",
        "success",
        "detail",
    }
    assert by_id["id"] == big.id and "event" not in by_id
    assert all(len(payload.encode()) < 8000 for payload in payloads)


async def test_a_slow_subscriber_in_another_process_only_loses_its_oldest_events(
    backend: tuple[str, str],
) -> None:
    """Remote events go into bounded queues too: a full one drops its oldest (counted),
    another subscriber and the publisher are unaffected."""
    kind, url = backend
    async with peers(kind, url, "a", "b", queue_size=2) as (a, b):
        events = [_event() for _ in range(5)]
        async with b.bus.subscribe() as fresh:
            for event in events:
                await publish(a, event)
            assert [await a.next() for _ in range(2)] == events[-2:]  # A's own, also bounded
            await eventually(lambda: len(b.heard) == 5, "B's listener to hear all five")
            assert b.heard == events  # listeners are not queues: they lose nothing
            assert [fresh.get_nowait(), fresh.get_nowait()] == events[-2:]
            assert b.pending() == events[-2:]
            assert b.bus.dropped == 6  # three from each of B's two subscribers


async def test_peers_hear_each_other_again_after_the_server_drops_them(
    backend: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """When the server cuts every transport connection, each process logs it, reconnects
    with backoff and events flow again in both directions."""
    kind, url = backend
    with caplog.at_level(logging.WARNING, logger="authql.events"):
        async with peers(kind, url, "a", "b") as (a, b):
            await cut_connections(kind, url, "%")
            for peer in (a, b):
                transport = peer.bus.transport
                assert transport is not None
                await eventually(
                    lambda t=transport: t.reconnects >= 1 and t.connected, "a reconnect"
                )
            first, second = _event(), _event(AuthEventType.SESSION_REVOKED)
            await publish(a, first)
            assert await b.next() == first
            await publish(b, second)
            assert await a.next() == first and await a.next() == second
    assert "lost its connection" in caplog.text and "reconnected" in caplog.text


async def test_an_event_published_while_reconnecting_still_reaches_peers(
    backend: tuple[str, str],
) -> None:
    """Publishing right after the publisher's connection was cut neither fails nor blocks,
    and the event is sent once the connection is back."""
    kind, url = backend
    async with peers(kind, url, "a", "b") as (a, b):
        await cut_connections(kind, url, "a")
        event = _event(AuthEventType.LOGOUT)
        await publish(a, event)
        assert a.heard == [event]
        assert await b.next() == event
        assert b.pending() == []


async def test_idle_connections_are_pinged_and_kept(backend: tuple[str, str]) -> None:
    """An idle transport pings its server and, answered, keeps its connection and events."""
    kind, url = backend
    # Unanswered, a ping would cost the connection after 0.05 + 0.3 s: we wait longer.
    quick = {"ping_interval": 0.05, "ping_timeout": 0.3}
    async with peers(kind, url, "a", "b", transport_options=quick) as (a, b):
        await asyncio.sleep(0.5)
        event = _event()
        await publish(a, event)
        assert await b.next() == event
        assert [peer.bus.transport.reconnects for peer in (a, b)] == [0, 0]  # type: ignore[union-attr]


async def test_a_peer_that_cannot_connect_logs_and_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the transport's server unreachable, start() gives up waiting, logs, and events
    are still stored and delivered in the process."""
    transport = RedisTransport(
        f"redis://127.0.0.1:{free_port()}/0",
        backoff_initial=0.05,
        backoff_max=0.1,
        connect_timeout=0.3,
    )
    bus = EventBus(transport=transport)
    with caplog.at_level(logging.WARNING, logger="authql.events"):
        await asyncio.wait_for(bus.start(), TIMEOUT)
        try:
            assert not transport.connected
            async with bus.subscribe() as queue:
                event = _event()
                await asyncio.wait_for(bus.publish(event), TIMEOUT)
                assert queue.get_nowait() is event
        finally:
            await asyncio.wait_for(bus.stop(), TIMEOUT)
    assert "cannot connect" in caplog.text and "not connected yet" in caplog.text


async def test_stop_closes_the_listening_connection(postgres_url: str) -> None:  # noqa: F811
    """After stop() the process holds no connection on the server any more."""
    dsn = asyncpg_dsn(postgres_url)
    admin = await asyncpg.connect(dsn)
    try:
        count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'authql-events-s'"
        async with peers("postgres", postgres_url, "s"):
            assert await admin.fetchval(count) == 1
        await eventually_async(lambda: admin.fetchval(count), 0)
    finally:
        await admin.close()


async def eventually_async(probe: Callable[[], Any], expected: object) -> None:
    deadline = time.monotonic() + TIMEOUT
    while (value := await probe()) != expected:
        if time.monotonic() > deadline:
            pytest.fail(f"still {value!r}, wanted {expected!r}")
        await asyncio.sleep(0.01)


# --- foreign messages -----------------------------------------------------------------------


async def test_malformed_messages_are_ignored(
    postgres_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Garbage, unknown formats and ids of events that do not exist are logged and skipped;
    the next real event still arrives."""
    async with peers("postgres", postgres_url, "a", "b") as (a, b):
        admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            with caplog.at_level(logging.WARNING, logger="authql.events"):
                for junk in (
                    "not json",
                    json.dumps({"v": 99, "origin": "x", "id": str(uuid.uuid4())}),
                    json.dumps({"v": 1, "origin": "x", "id": str(uuid.uuid4())}),
                    json.dumps({"v": 1, "origin": "x", "event": {"type": "NOPE"}}),
                ):
                    await admin.execute("SELECT pg_notify($1, $2)", CHANNEL, junk)
                event = _event()
                await publish(a, event)
                assert await b.next() == event
        finally:
            await admin.close()
        assert b.pending() == [] and b.heard == [event]
    assert "malformed" in caplog.text and "unknown format" in caplog.text
    assert "not in the log" in caplog.text


async def test_signed_buses_ignore_unsigned_and_foreign_messages(
    postgres_url: str,  # noqa: F811
) -> None:
    """With a signing key, only messages signed with the same key are delivered: a forged
    event (or one from a deployment with another key) never reaches a subscriber."""
    async with (
        peers("postgres", postgres_url, "a", "b", signing_key="k1") as (a, b),
        peers("postgres", postgres_url, "c", signing_key="k2") as (c,),
    ):
        forged = _event(AuthEventType.ROLES_CHANGED)
        wire = {"v": 1, "origin": "intruder", "event": {**forged.__dict__}}
        wire["event"].update(type=forged.type.value, at=forged.at.isoformat())
        admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            await admin.execute("SELECT pg_notify($1, $2)", CHANNEL, json.dumps(wire))
        finally:
            await admin.close()
        await publish(c, _event(AuthEventType.LOGOUT))
        event = _event()
        await publish(a, event)
        assert await b.next() == event
        assert b.pending() == [] and b.heard == [event]


# --- through the app ------------------------------------------------------------------------


async def test_a_logout_on_one_instance_is_honoured_by_another_at_once(
    make_client: Callable[..., GraphQLClient],
    redis_url: str,  # noqa: F811
) -> None:
    """Two app instances on one Redis bus: after logout on A, B refuses the token on the very
    next request even though B had the session cached (for a minute)."""
    a = make_client(event_bus=redis_url, session_cache_seconds=60.0)
    b = make_client(event_bus=redis_url, session_cache_seconds=60.0)
    await a.services.start()
    try:
        await b.services.start()
        try:
            await a.register("ada@example.com")
            login = await a.gql(LOGIN, {"identifier": "ada@example.com", "password": PASSWORD})
            token = login.data["login"]["accessToken"]
            assert (await b.me(token)) is not None  # B caches the live session
            assert (await a.gql("mutation { logout }", token=token)).data == {"logout": True}
            deadline = time.monotonic() + 1.0
            while (await b.me(token)) is not None:
                assert time.monotonic() < deadline, "B still accepts the token after logout"
                await asyncio.sleep(0.01)
        finally:
            await b.services.stop()
    finally:
        await a.services.stop()
