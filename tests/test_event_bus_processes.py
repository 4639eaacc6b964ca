"""Two real authql processes on one PostgreSQL share their events.

Each test talks to two ``authql serve`` processes over real HTTP and websockets, as a load
balancer's clients would: what one instance publishes, a subscriber on the other sees, and
a logout on one is honoured by the other on the very next request. Run once with the
PostgreSQL LISTEN/NOTIFY bus (the default on PostgreSQL) and once with Redis pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_ws import AsyncWebSocketSession, aconnect_ws

from authql.settings import _new_private_key_pem
from tests.servers import (
    create_database,
    drop_database,
    free_port,
    postgres_url,  # noqa: F401
    redis_url,  # noqa: F401
)
from tests.support import LOGIN, ME, PASSWORD, REGISTER

#: Generous: on a loaded machine two interpreters importing the app at once can be slow.
START_TIMEOUT = 60.0
#: How long an event may take from one process to the other before the test fails.
DELIVERY_TIMEOUT = 5.0
ADMIN_EMAIL = "admin@example.com"
AUTH_EVENTS = "subscription { authEvents { type userId } }"
#: Far longer than the tests run: only the event bus can make B forget a cached session.
SESSION_CACHE_SECONDS = "60"


@dataclass
class Cluster:
    """Two serving processes (A and B) on one database and one event bus."""

    a: str
    b: str
    logs: list[Path]


def _environment(database_url: str, data_dir: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AUTHQL_") and name != "PYTHONWARNINGS"
    }
    env.update(
        AUTHQL_DATABASE_URL=database_url,
        AUTHQL_DATA_DIR=str(data_dir),
        AUTHQL_SECRET_KEY="processes-secret-" + uuid.uuid4().hex,
        AUTHQL_JWT_PRIVATE_KEY=_new_private_key_pem(),
        AUTHQL_RATE_LIMITS="off",
        AUTHQL_ARGON2_TIME_COST="1",
        AUTHQL_ARGON2_MEMORY_KIB="8",
        AUTHQL_ARGON2_PARALLELISM="1",
        AUTHQL_SESSION_CACHE_SECONDS=SESSION_CACHE_SECONDS,
        AUTHQL_LOG_LEVEL="warning",
    )
    return env


async def _cli(env: dict[str, str], *args: str) -> str:
    """Run ``python -m authql <args>`` to completion (in a thread); its stdout."""
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "authql", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"authql {' '.join(args)} exited with {result.returncode}: {result.stderr}")
    return result.stdout


@contextlib.contextmanager
def _serving(env: dict[str, str], logs: list[Path]) -> Iterator[list[str]]:
    """``authql serve`` once per log path, on free ports; always terminated (then killed)."""
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for log_path in logs:
            port = free_port()
            with log_path.open("wb") as log:
                processes.append(
                    subprocess.Popen(  # noqa: S603 - fixed interpreter and arguments
                        [
                            sys.executable,
                            "-m",
                            "authql",
                            "serve",
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(port),
                        ],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_healthy(urls: list[str], logs: list[Path]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    for url, log in zip(urls, logs, strict=True):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"{url} did not become healthy: {log.read_text()[-3000:]}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
async def cluster_database(
    postgres_url: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, str]]:
    """A fresh database, migrated by the CLI, with an admin account; yields the environment
    every process of the module runs with (one secret key and signing key for all)."""
    database_url = await create_database(postgres_url, "authql_procs")
    try:
        env = _environment(database_url, tmp_path_factory.mktemp("processes") / "data")
        # create-admin applies the migrations first, as `authql migrate` would.
        await _cli(env, "create-admin", "--email", ADMIN_EMAIL, "--password", PASSWORD)
        yield env
    finally:
        await drop_database(database_url)


@pytest.fixture(scope="module", params=["postgres", "redis"])
def cluster(
    request: pytest.FixtureRequest,
    cluster_database: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """Two authql processes on the shared database with the event bus ``param`` names. Both
    are stopped at the end, even on failure, and must have logged no traceback."""
    event_bus = "postgres" if request.param == "postgres" else request.getfixturevalue("redis_url")
    scratch = tmp_path_factory.mktemp(f"cluster-{request.param}")
    logs = [scratch / "a.log", scratch / "b.log"]
    with _serving({**cluster_database, "AUTHQL_EVENT_BUS": event_bus}, logs) as (a, b):
        _wait_healthy([a, b], logs)
        yield Cluster(a, b, logs)
    for log in logs:
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


# --- clients --------------------------------------------------------------------------------


async def gql(
    http: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None, token: str = ""
) -> dict[str, Any]:
    """One GraphQL request over real HTTP; the whole response body."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    body: dict[str, Any] = response.json()
    return body


async def sign_in(http: httpx.AsyncClient, email: str) -> dict[str, Any]:
    """The login payload of a successful password login."""
    body = await gql(http, LOGIN, {"identifier": email, "password": PASSWORD})
    assert not body.get("errors"), body
    payload: dict[str, Any] = body["data"]["login"]
    assert payload["status"] == "OK", payload
    return payload


async def register(http: httpx.AsyncClient, email: str) -> str:
    """Register ``email``; its user id."""
    body = await gql(http, REGISTER, {"input": {"email": email, "password": PASSWORD}})
    assert not body.get("errors"), body
    return str(body["data"]["register"]["user"]["id"])


@contextlib.asynccontextmanager
async def auth_events(base_url: str, token: str) -> AsyncIterator[AsyncWebSocketSession]:
    """A real websocket to ``base_url`` with ``authEvents`` subscribed (graphql-transport-ws)."""
    try:
        async with (
            httpx.AsyncClient(base_url=base_url) as http,
            aconnect_ws(
                "/graphql",
                http,
                subprotocols=["graphql-transport-ws"],
                keepalive_ping_interval_seconds=None,
            ) as ws,
        ):
            init = {"authorization": f"Bearer {token}"}
            await ws.send_json({"type": "connection_init", "payload": init})
            ack = await _receive(ws)
            assert ack["type"] == "connection_ack", ack
            await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": AUTH_EVENTS}})
            yield ws
    except BaseExceptionGroup as group:
        # anyio task groups wrap whatever the test raised; re-raise a lone failure as itself.
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if leaf is group:
            raise
        raise leaf from None


async def _receive(ws: AsyncWebSocketSession, within: float = DELIVERY_TIMEOUT) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = await asyncio.wait_for(ws.receive_json(), within)
        if message.get("type") not in ("ping", "pong", "ka"):
            return message


async def next_matching(
    ws: AsyncWebSocketSession, wanted: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first authEvents item ``wanted`` accepts, within DELIVERY_TIMEOUT."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail("the expected event did not arrive in time")
        try:
            message = await _receive(ws, remaining)
        except TimeoutError:
            pytest.fail("the expected event did not arrive in time")
        assert message["type"] == "next", message
        assert not message["payload"].get("errors"), message
        event: dict[str, Any] = message["payload"]["data"]["authEvents"]
        if wanted(event):
            return event


# --- tests ----------------------------------------------------------------------------------


async def test_an_event_from_one_process_reaches_a_subscriber_on_the_other(
    cluster: Cluster, request: pytest.FixtureRequest
) -> None:
    """An admin watching authEvents on instance B sees a user sign in on instance A."""
    async with (
        httpx.AsyncClient(base_url=cluster.a) as a,
        httpx.AsyncClient(base_url=cluster.b) as b,
    ):
        admin = await sign_in(b, ADMIN_EMAIL)
        async with auth_events(cluster.b, admin["accessToken"]) as ws:
            # A failed sign-in on B itself shows the subscription is live before A acts.
            await gql(b, LOGIN, {"identifier": "nobody@example.com", "password": "wrong pw"})
            await next_matching(ws, lambda event: event["type"] == "LOGIN_FAILED")
            email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
            user_id = await register(a, email)
            sent = time.perf_counter()
            await sign_in(a, email)
            event = await next_matching(
                ws,
                lambda event: event["type"] == "LOGIN_SUCCEEDED" and event["userId"] == user_id,
            )
            # Shown by `--junitxml=... -o junit_family=xunit1` (the login itself included).
            latency = time.perf_counter() - sent
            request.node.user_properties.append(("login_on_a_to_event_on_b_seconds", latency))
            assert event == {"type": "LOGIN_SUCCEEDED", "userId": user_id}


async def test_a_logout_on_one_process_is_refused_on_the_other_at_once(cluster: Cluster) -> None:
    """After logout on A, the access token stops working on B within a second, although B
    had just served it (and caches sessions for a minute)."""
    async with (
        httpx.AsyncClient(base_url=cluster.a) as a,
        httpx.AsyncClient(base_url=cluster.b) as b,
    ):
        email = f"grace-{uuid.uuid4().hex[:8]}@example.com"
        await register(a, email)
        token = (await sign_in(a, email))["accessToken"]
        assert (await gql(b, ME, token=token))["data"]["me"]["email"] == email  # B caches it
        assert (await gql(a, "mutation { logout }", token=token))["data"] == {"logout": True}
        deadline = time.monotonic() + 1.0
        while (await gql(b, ME, token=token))["data"]["me"] is not None:
            assert time.monotonic() < deadline, "B still accepts the token a second after logout"
            await asyncio.sleep(0.01)
        refused = await gql(b, "query { mySessions { id } }", token=token)
        assert refused["errors"][0]["extensions"]["code"] == "UNAUTHORIZED"
