"""Cleanup of what has expired: exactly the dead rows of each kind go and the live ones
stay, the lease lets one process run each round, the server's periodic job, and the
``authql cleanup`` command."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from authql.jobs import CLEANUP_LEASE, cleanup_round, take_lease
from authql.models import (
    Lease,
    OAuthState,
    OneTimeToken,
    PendingIdentity,
    RefreshToken,
    Session,
    TwoFactorChallenge,
    User,
)
from authql.resolvers.accounts import create_admin
from authql.resolvers.cleanup import CleanupReport, run_cleanup
from authql.services.clock import FrozenClock
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]

DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)
CLEANUP = "mutation { cleanupSessions }"


# --- rows of every kind, live and dead -------------------------------------------------------


async def _user(email: str, deleted_at: dt.datetime | None = None) -> User:
    return await User.create(id=uuid.uuid4(), email=email, deleted_at=deleted_at)


async def _session(
    user: User, now: dt.datetime, *, expires: dt.datetime, revoked: dt.datetime | None = None
) -> Session:
    session = await Session.create(
        user_id=user.id,
        method="password",
        created_at=now - DAY,
        last_seen_at=now - DAY,
        expires_at=expires,
        revoked_at=revoked,
    )
    for used in (now - SECOND, None):  # a rotated (used) refresh token and the live one
        await RefreshToken.create(
            session_id=session.id,
            digest=uuid.uuid4().hex,
            created_at=now - DAY,
            expires_at=expires,
            used_at=used,
        )
    return session


async def seed(now: dt.datetime, retention_days: int = 30) -> dict[str, list[object]]:
    """For each kind: two dead rows (expired; used or revoked) and one live row. Accounts:
    one past the restore window, one inside it, one live. Returns the live rows' ids."""
    ada = await _user("ada@example.com")
    later, earlier = now + DAY, now - SECOND
    live: dict[str, list[object]] = {}
    live_session = await _session(ada, now, expires=later)
    await _session(ada, now, expires=earlier)
    await _session(ada, now, expires=later, revoked=now - DAY)
    live["sessions"] = [live_session.id]
    common = {"created_at": now - DAY}
    spent = [{"expires_at": earlier}, {"expires_at": later, "used_at": earlier}]
    rows = []
    for extra in [{"expires_at": later}, *spent]:
        rows.append(
            await OneTimeToken.create(
                user_id=ada.id, purpose="magic_link", digest=uuid.uuid4().hex, **common, **extra
            )
        )
        rows.append(
            await TwoFactorChallenge.create(
                user_id=ada.id, digest=uuid.uuid4().hex, method="password", **common, **extra
            )
        )
        rows.append(
            await OAuthState.create(
                digest=uuid.uuid4().hex,
                provider="acme",
                code_verifier="v",
                nonce="n",
                redirect_uri="http://127.0.0.1:8000/cb",
                binding_digest="b",
                **common,
                **extra,
            )
        )
        rows.append(
            await PendingIdentity.create(
                digest=uuid.uuid4().hex, provider="acme", subject="s", **common, **extra
            )
        )
    live["tokens"] = [row.id for row in rows[:4]]
    retention = dt.timedelta(days=retention_days)
    await _user("gone@example.com", deleted_at=now - retention - SECOND)
    kept = await _user("kept@example.com", deleted_at=now - retention + SECOND)
    live["accounts"] = [ada.id, kept.id]
    return live


async def assert_survivors(live: dict[str, list[object]]) -> None:
    """Exactly the live rows remain (and the live session keeps both refresh tokens)."""
    assert await Session.filter(user__email="ada@example.com").count() == 1
    assert await Session.filter(id__in=live["sessions"]).count() == 1
    assert await RefreshToken.filter(session_id__in=live["sessions"]).count() == 2
    assert await RefreshToken.filter(session__user__email="ada@example.com").count() == 2
    for model in (OneTimeToken, TwoFactorChallenge, OAuthState, PendingIdentity):
        assert await model.all().count() == 1, model.__name__
    ids = set(live["tokens"])
    for model in (OneTimeToken, TwoFactorChallenge, OAuthState, PendingIdentity):
        assert set(await model.all().values_list("id", flat=True)) <= ids
    emails = set(await User.all().values_list("email", flat=True))
    assert "gone@example.com" not in emails
    assert {"ada@example.com", "kept@example.com"} <= emails


EXPECTED = CleanupReport(
    sessions=2,
    one_time_tokens=2,
    challenges=2,
    oauth_states=2,
    pending_identities=2,
    accounts=1,
)


# --- what goes and what stays ----------------------------------------------------------------


async def test_cleanup_removes_exactly_what_expired(clock: FrozenClock) -> None:
    """One pass deletes the expired, used and revoked rows of each kind and the account past
    its window, counting each kind exactly; the live rows survive; a second pass finds
    nothing."""
    live = await seed(clock.now())
    report = await run_cleanup(now=clock.now(), retention_days=30)
    assert report == EXPECTED
    assert report.total == 11
    await assert_survivors(live)
    assert (await run_cleanup(now=clock.now(), retention_days=30)).total == 0


async def test_cleanup_sessions_mutation_runs_the_whole_cleanup(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """Admins' cleanupSessions runs the same pass and returns the total; the admin's own
    session survives it."""
    await create_admin(client.services.passwords, email="root@example.com", password=PASSWORD)
    admin = (await client.login("root@example.com")).data["login"]["accessToken"]
    live = await seed(clock.now())
    result = await client.gql(CLEANUP, token=admin)
    assert result.data == {"cleanupSessions": EXPECTED.total}
    await assert_survivors(live)
    assert (await client.me(admin)) is not None
    assert (await client.gql(CLEANUP, token=admin)).data == {"cleanupSessions": 0}


async def test_retention_setting_decides_what_is_purged(clock: FrozenClock) -> None:
    """With a shorter retention, an account deleted two days ago is purged too."""
    await _user("recent@example.com", deleted_at=clock.now() - 2 * DAY)
    assert (await run_cleanup(now=clock.now(), retention_days=30)).accounts == 0
    assert (await run_cleanup(now=clock.now(), retention_days=1)).accounts == 1
    assert not await User.exists(email="recent@example.com")


# --- the lease -------------------------------------------------------------------------------


async def test_two_concurrent_rounds_run_once(make_client: MakeClient, clock: FrozenClock) -> None:
    """Two processes (two apps on one database) starting a round together: exactly one
    takes the lease and cleans, the other skips; the lease holds for one interval."""
    first, second = make_client(), make_client()
    await seed(clock.now())
    reports = await asyncio.gather(
        cleanup_round(first.services, "process-a"),
        cleanup_round(second.services, "process-b"),
    )
    ran = [report for report in reports if report is not None]
    assert ran == [EXPECTED]
    (lease,) = await Lease.all()
    assert lease.name == CLEANUP_LEASE and lease.holder in ("process-a", "process-b")
    other = "process-b" if lease.holder == "process-a" else "process-a"
    assert await cleanup_round(first.services, other) is None
    assert await cleanup_round(first.services, lease.holder) == CleanupReport()


async def test_a_dead_holders_lease_expires(clock: FrozenClock) -> None:
    """A lease whose holder stopped renewing it is taken over once it expires, not before."""
    now = clock.now()
    assert await take_lease("job", "dead", now=now, seconds=600)
    assert not await take_lease("job", "alive", now=now + dt.timedelta(seconds=599), seconds=600)
    assert await take_lease("job", "alive", now=now + dt.timedelta(seconds=600), seconds=600)
    (lease,) = await Lease.filter(name="job")
    assert lease.holder == "alive"
    assert not await take_lease("job", "dead", now=now + dt.timedelta(seconds=601), seconds=600)


# --- the periodic job ------------------------------------------------------------------------


async def test_server_runs_cleanup_periodically(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """With a short interval the running server cleans up by itself, round after round."""
    client = make_client(cleanup_interval=0.05)
    app = client.app
    async with app.router.lifespan_context(app):
        await seed(clock.now())
        await _until(lambda: PendingIdentity.all().count(), 1)
        clock.advance(2 * 86_400)  # the live rows expire too, and a later round takes them
        await _until(lambda: PendingIdentity.all().count(), 0)
    assert await Session.all().count() == 0


async def test_failed_rounds_are_logged_and_the_loop_goes_on(
    make_client: MakeClient, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A round that fails (here a retention too long for the calendar) is logged, and the
    next round still runs."""
    client = make_client(cleanup_interval=0.05, deleted_retention_days=999_999_999)
    app = client.app
    with caplog.at_level(logging.ERROR, logger="authql.jobs"):
        async with app.router.lifespan_context(app):
            await _until(lambda: _failures(caplog), 2)
    assert "cleanup round failed" in caplog.text


async def test_interval_zero_turns_the_job_off(make_client: MakeClient, clock: FrozenClock) -> None:
    """cleanup_interval=0: no periodic cleanup runs and no lease is taken."""
    client = make_client(cleanup_interval=0)
    await seed(clock.now())
    app = client.app
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.1)
    assert await PendingIdentity.all().count() == 3
    assert not await Lease.exists()


async def _failures(caplog: pytest.LogCaptureFixture) -> int:
    return sum("cleanup round failed" in record.getMessage() for record in caplog.records)


async def _until(read: Callable[[], object], expected: int, within: float = 5.0) -> None:
    """Wait until ``await read()`` returns ``expected`` (polling; fails after ``within``)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await read()  # type: ignore[misc]
        if value == expected:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"still {value}, expected {expected}")
        await asyncio.sleep(0.02)


# --- the command -----------------------------------------------------------------------------


def test_cleanup_command_prints_counts_per_kind(tmp_path: Path) -> None:
    """``authql cleanup`` purges an account past retention and deletes an expired session,
    printing one count per kind and the total."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AUTHQL_") and name != "PYTHONWARNINGS"
    }
    database = tmp_path / "db.sqlite3"
    env.update(
        AUTHQL_DATABASE_URL=f"sqlite://{database}",
        AUTHQL_DATA_DIR=str(tmp_path / "data"),
        AUTHQL_LOG_LEVEL="warning",
    )
    assert _cli(env, "migrate").returncode == 0
    with sqlite3.connect(database) as connection:
        old = "2000-01-01 00:00:00+00:00"
        gone, live = str(uuid.uuid4()), str(uuid.uuid4())
        for ident, email, deleted in ((gone, "gone@x.io", old), (live, "ada@x.io", None)):
            connection.execute(
                "INSERT INTO users (id, email, email_verified, phone_verified,"
                " two_factor_enabled, failed_logins, created_at, updated_at, deleted_at,"
                " pending_approval) VALUES (?, ?, 0, 0, 0, 0, ?, ?, ?, 0)",
                (ident, email, old, old, deleted),
            )
        connection.execute(
            "INSERT INTO sessions (id, user_id, method, remember, created_at, last_seen_at,"
            " expires_at) VALUES (?, ?, 'password', 0, ?, ?, ?)",
            (str(uuid.uuid4()), live, old, old, old),
        )
    result = _cli(env, "cleanup")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "sessions: 1",
        "one_time_tokens: 0",
        "challenges: 0",
        "oauth_states: 0",
        "pending_identities: 0",
        "accounts: 1",
        "total: 2",
    ]
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT email FROM users").fetchall() == [("ada@x.io",)]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed interpreter and arguments
        [sys.executable, "-m", "authql", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
