"""Subscriptions over real in-process websockets (httpx-ws), on both protocols: delivery and
isolation of authEvents and sessionEvents, the end of a stream (and the 4401 / 4403 close of
its connection) on expiry, revocation and demotion, the metrics stream, the per-connection
and per-user caps, cookie authentication on the handshake and the origin check."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, WebSocketUpgradeError, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from starlette.applications import Starlette
from strawberry.http.exceptions import WebSocketDisconnected

from authql.errors import RateLimited
from authql.resolvers import telemetry
from authql.resolvers.accounts import create_admin
from authql.resolvers.telemetry import SubscriptionSlots
from authql.schema.view import AuthqlLegacyWSHandler, AuthqlTransportWSHandler
from authql.services.clock import FrozenClock
from tests.support import PASSWORD, REFRESH, GraphQLClient

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
BOTH_PROTOCOLS = pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
TIMEOUT = 5.0

AUTH_EVENTS = "subscription { authEvents { type userId sessionId } }"
SESSION_EVENTS = (
    "subscription { sessionEvents { type at session { id current method revokedAt } } }"
)
METRICS = """
subscription($interval: Int!) {
  metrics(intervalSeconds: $interval) {
    at windowSeconds loginsSucceeded loginsFailed registrations activeSessions rateLimited
    eventsPerType
  }
}
"""


# --- websocket helpers ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_socket(
    app: Starlette, protocol: str, *, headers: dict[str, str] | None = None
) -> AsyncIterator[AsyncWebSocketSession]:
    """A websocket to the in-process app's /graphql speaking ``protocol`` (built inside the
    test's own task: httpx-ws cannot live in a yield fixture)."""
    transport = ASGIWebSocketTransport(app)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
            aconnect_ws(
                "/graphql",
                http,
                subprotocols=[protocol],
                headers=dict(headers or {}),
                keepalive_ping_interval_seconds=None,
            ) as ws,
        ):
            yield ws
    except BaseExceptionGroup as group:
        # anyio task groups wrap whatever the test raised; re-raise a lone failure as itself.
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if leaf is group:
            raise
        raise leaf from None


async def receive(ws: AsyncWebSocketSession) -> dict[str, Any]:
    """The next protocol message, skipping keep-alives; fails after TIMEOUT seconds."""
    while True:
        message: dict[str, Any] = await asyncio.wait_for(ws.receive_json(), TIMEOUT)
        if message.get("type") not in ("ka", "ping", "pong"):
            return message


async def until_closed(ws: AsyncWebSocketSession) -> tuple[list[dict[str, Any]], int]:
    """Every message up to the server's close, and the close code."""
    messages: list[dict[str, Any]] = []
    with pytest.raises(WebSocketDisconnect) as closed:
        for _ in range(50):
            messages.append(await receive(ws))
    return messages, closed.value.code


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def init(ws: AsyncWebSocketSession, payload: dict[str, Any] | None = None) -> None:
    """Send connection_init and expect connection_ack."""
    await ws.send_json({"type": "connection_init", "payload": payload or {}})
    ack = await receive(ws)
    assert ack["type"] == "connection_ack", ack


async def start(
    ws: AsyncWebSocketSession,
    protocol: str,
    query: str,
    variables: dict[str, Any] | None = None,
    op_id: str = "1",
) -> None:
    """Start an operation (subscribe / start, depending on the protocol)."""
    kind = "subscribe" if protocol == TRANSPORT_WS else "start"
    payload = {"query": query, "variables": variables or {}}
    await ws.send_json({"id": op_id, "type": kind, "payload": payload})


async def stop(ws: AsyncWebSocketSession, protocol: str, op_id: str) -> None:
    """Stop an operation (complete / stop, depending on the protocol)."""
    await ws.send_json({"id": op_id, "type": "complete" if protocol == TRANSPORT_WS else "stop"})


def is_data(message: dict[str, Any]) -> bool:
    return message["type"] in ("next", "data")


async def next_item(ws: AsyncWebSocketSession, field: str) -> dict[str, Any]:
    """The next item of subscription ``field``, asserting it carried no errors."""
    message = await receive(ws)
    assert is_data(message), message
    assert not message["payload"].get("errors"), message
    return message["payload"]["data"][field]  # type: ignore[no-any-return]


def error_codes(message: dict[str, Any]) -> list[str]:
    """The ``extensions.code`` of each error an operation message reports."""
    payload = message["payload"]
    if message["type"] == "error":
        errors = payload if isinstance(payload, list) else [payload]
    else:
        errors = payload.get("errors") or []
    return [error.get("extensions", {}).get("code") for error in errors]


async def wait_for_subscribers(app: Starlette, count: int) -> None:
    """Poll (for at most TIMEOUT seconds) until ``count`` streams listen on the event bus."""
    step = 0.005
    for _ in range(int(TIMEOUT / step)):
        if app.state.services.events.subscriber_count == count:
            return
        await asyncio.sleep(step)
    pytest.fail(f"expected {count} subscriber(s) on the event bus")


def assert_ended(messages: list[dict[str, Any]], op_id: str = "1") -> None:
    """The operation completed before the connection closed, and nothing else arrived."""
    assert messages and messages[-1] == {"id": op_id, "type": "complete"}, messages


@pytest.fixture
def app(make_app: Callable[..., Starlette]) -> Starlette:
    """One app shared by the HTTP client and the websockets of a test."""
    return make_app()


@pytest.fixture
def http(app: Starlette, make_client: Callable[..., GraphQLClient]) -> GraphQLClient:
    """GraphQL over HTTP to ``app``."""
    return make_client(app)


@pytest.fixture
def fast_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams re-check their caller every 20 ms instead of every 2 s."""
    monkeypatch.setattr(telemetry, "RECHECK_SECONDS", 0.02)


async def sign_in(http: GraphQLClient, email: str) -> dict[str, Any]:
    """A fresh session of ``email``: the login payload."""
    result = await http.login(email)
    return result.data["login"]  # type: ignore[no-any-return]


async def make_admin(http: GraphQLClient, email: str) -> dict[str, Any]:
    """An admin account, signed in: the login payload."""
    await create_admin(http.services.passwords, email=email, password=PASSWORD)
    return await sign_in(http, email)


# --- sessionEvents --------------------------------------------------------------------------


@BOTH_PROTOCOLS
async def test_session_events_report_created_refreshed_and_revoked(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """An app sees its account's other sessions appear, refresh and end, as they happen."""
    account = await http.register("ada@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(account["accessToken"]))
        await start(ws, protocol, SESSION_EVENTS)
        await wait_for_subscribers(app, 1)

        laptop = await sign_in(http, "ada@example.com")
        created = await next_item(ws, "sessionEvents")
        assert created["type"] == "CREATED"
        assert created["session"] == {
            "id": laptop["session"]["id"],
            "current": False,
            "method": "password",
            "revokedAt": None,
        }

        refreshed = await http.gql(REFRESH, {"token": laptop["refreshToken"]})
        assert refreshed.data["refresh"]["status"] == "OK"
        event = await next_item(ws, "sessionEvents")
        assert (event["type"], event["session"]["id"]) == ("REFRESHED", laptop["session"]["id"])

        revoke = "mutation($id: ID!) { revokeSession(id: $id) }"
        result = await http.gql(
            revoke, {"id": laptop["session"]["id"]}, token=account["accessToken"]
        )
        assert result.data["revokeSession"] is True
        event = await next_item(ws, "sessionEvents")
        assert event["type"] == "REVOKED"
        assert event["session"]["id"] == laptop["session"]["id"]
        assert event["session"]["current"] is False
        assert event["session"]["revokedAt"] is not None

        # The subscriber's own session is still live: the stream goes on.
        phone = await sign_in(http, "ada@example.com")
        event = await next_item(ws, "sessionEvents")
        assert (event["type"], event["session"]["id"]) == ("CREATED", phone["session"]["id"])


@BOTH_PROTOCOLS
async def test_own_session_revoked_delivers_revoked_then_closes_4401(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """Signing out everywhere reports each other session, then the subscriber's own one
    (current), then the operation completes and the connection closes with 4401."""
    account = await http.register("ada@example.com")
    other = await sign_in(http, "ada@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(account["accessToken"]))
        await start(ws, protocol, SESSION_EVENTS)
        await wait_for_subscribers(app, 1)

        result = await http.gql("mutation { logoutAll }", token=other["accessToken"])
        assert result.data["logoutAll"] == 2
        messages, code = await until_closed(ws)
    assert code == 4401
    assert_ended(messages)
    events = [m["payload"]["data"]["sessionEvents"] for m in messages if is_data(m)]
    assert [(e["type"], e["session"]["id"], e["session"]["current"]) for e in events] == [
        ("REVOKED", other["session"]["id"], False),
        ("REVOKED", account["session"]["id"], True),
    ]
    assert app.state.services.events.subscriber_count == 0


async def test_password_change_reports_every_other_session_revoked(
    app: Starlette, http: GraphQLClient
) -> None:
    """A password change ends the account's other sessions without naming them; each one
    is still reported REVOKED, and the changing session's subscriber stays connected."""
    account = await http.register("ada@example.com")
    laptop = await sign_in(http, "ada@example.com")
    phone = await sign_in(http, "ada@example.com")
    async with open_socket(app, TRANSPORT_WS) as ws:
        await init(ws, bearer(account["accessToken"]))
        await start(ws, TRANSPORT_WS, SESSION_EVENTS)
        await wait_for_subscribers(app, 1)
        change = (
            "mutation($c: String!, $n: String!) "
            "{ changePassword(currentPassword: $c, newPassword: $n) }"
        )
        result = await http.gql(
            change, {"c": PASSWORD, "n": "another long passphrase"}, token=account["accessToken"]
        )
        assert result.data["changePassword"] is True
        first = await next_item(ws, "sessionEvents")
        second = await next_item(ws, "sessionEvents")
        assert {first["session"]["id"], second["session"]["id"]} == {
            laptop["session"]["id"],
            phone["session"]["id"],
        }
        assert first["type"] == second["type"] == "REVOKED"
        await sign_in_with(http, "ada@example.com", "another long passphrase")
        assert (await next_item(ws, "sessionEvents"))["type"] == "CREATED"


async def sign_in_with(http: GraphQLClient, email: str, password: str) -> dict[str, Any]:
    result = await http.login(email, password)
    return result.data["login"]  # type: ignore[no-any-return]


@BOTH_PROTOCOLS
async def test_session_events_never_show_another_users_sessions(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """Bob's sign-ins, refreshes and sign-outs never reach Ada's sessionEvents, even when
    Ada is an admin."""
    ada = await make_admin(http, "ada@example.com")
    bob = await http.register("bob@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(ada["accessToken"]))
        await start(ws, protocol, SESSION_EVENTS)
        await wait_for_subscribers(app, 1)

        bob_again = await sign_in(http, "bob@example.com")
        await http.gql(REFRESH, {"token": bob_again["refreshToken"]})
        await http.gql("mutation { logoutAll }", token=bob["accessToken"])
        # Events arrive in publish order: had Bob's leaked, they would come first.
        ada_again = await sign_in(http, "ada@example.com")
        event = await next_item(ws, "sessionEvents")
        assert (event["type"], event["session"]["id"]) == ("CREATED", ada_again["session"]["id"])


async def test_session_events_need_a_signed_in_caller(app: Starlette) -> None:
    """An anonymous socket's sessionEvents answers UNAUTHORIZED and listens to nothing."""
    async with open_socket(app, TRANSPORT_WS) as ws:
        await init(ws)
        await start(ws, TRANSPORT_WS, SESSION_EVENTS)
        assert error_codes(await receive(ws)) == ["UNAUTHORIZED"]
    assert app.state.services.events.subscriber_count == 0


# --- authEvents -----------------------------------------------------------------------------


@BOTH_PROTOCOLS
async def test_auth_events_are_isolated_between_two_users(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """Ada and Bob subscribe at once; each receives only their own account's events."""
    ada = await http.register("ada@example.com")
    bob = await http.register("bob@example.com")
    async with open_socket(app, protocol) as ada_ws, open_socket(app, protocol) as bob_ws:
        await init(ada_ws, bearer(ada["accessToken"]))
        await init(bob_ws, bearer(bob["accessToken"]))
        await start(ada_ws, protocol, AUTH_EVENTS)
        await start(bob_ws, protocol, AUTH_EVENTS)
        await wait_for_subscribers(app, 2)

        bob_session = await sign_in(http, "bob@example.com")
        await http.login("bob@example.com", "wrong password!")
        await http.gql("mutation { logout }", token=bob_session["accessToken"])
        ada_session = await sign_in(http, "ada@example.com")

        assert await next_item(ada_ws, "authEvents") == {
            "type": "LOGIN_SUCCEEDED",
            "userId": ada["user"]["id"],
            "sessionId": ada_session["session"]["id"],
        }
        seen_by_bob = [await next_item(bob_ws, "authEvents") for _ in range(3)]
        assert [e["type"] for e in seen_by_bob] == ["LOGIN_SUCCEEDED", "LOGIN_FAILED", "LOGOUT"]
        assert {e["userId"] for e in seen_by_bob} == {bob["user"]["id"]}


@BOTH_PROTOCOLS
async def test_auth_events_close_4401_when_the_session_is_revoked(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """Revoking the subscriber's session from another device ends its authEvents stream
    and closes the connection with 4401; nothing after the revocation is delivered."""
    account = await http.register("ada@example.com")
    other = await sign_in(http, "ada@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(account["accessToken"]))
        await start(ws, protocol, AUTH_EVENTS)
        await wait_for_subscribers(app, 1)
        revoke = "mutation($id: ID!) { revokeSession(id: $id) }"
        result = await http.gql(
            revoke, {"id": account["session"]["id"]}, token=other["accessToken"]
        )
        assert result.data["revokeSession"] is True
        await sign_in(http, "ada@example.com")
        messages, code = await until_closed(ws)
    assert code == 4401
    assert_ended(messages)
    assert not [m for m in messages if is_data(m)], messages


@BOTH_PROTOCOLS
async def test_expired_token_ends_the_stream_and_closes_4401(
    protocol: str,
    make_app: Callable[..., Starlette],
    make_client: Callable[..., GraphQLClient],
    clock: FrozenClock,
    fast_recheck: None,
) -> None:
    """When the socket's access token expires, its subscriptions end within the re-check
    interval and the connection closes with 4401, though nothing else happened."""
    app = make_app(access_token_ttl=60)
    http = make_client(app)
    account = await http.register("ada@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(account["accessToken"]))
        await start(ws, protocol, AUTH_EVENTS, op_id="a")
        await start(ws, protocol, SESSION_EVENTS, op_id="s")
        await wait_for_subscribers(app, 2)
        clock.advance(30)
        await asyncio.sleep(0.1)  # several re-checks while the token is still valid
        assert app.state.services.events.subscriber_count == 2
        clock.advance(31)
        messages, code = await until_closed(ws)
    assert code == 4401
    assert not [m for m in messages if is_data(m)], messages
    completed = {m["id"] for m in messages if m["type"] == "complete"}
    assert completed & {"a", "s"}, messages
    await wait_for_subscribers(app, 0)


async def test_new_operations_on_a_revoked_socket_close_it_with_4401(
    app: Starlette, http: GraphQLClient
) -> None:
    """A subscribe sent after the socket's session was revoked answers UNAUTHORIZED, and
    the connection then closes with 4401."""
    account = await http.register("ada@example.com")
    async with open_socket(app, TRANSPORT_WS) as ws:
        await init(ws, bearer(account["accessToken"]))
        await http.gql("mutation { logout }", token=account["accessToken"])
        await start(ws, TRANSPORT_WS, AUTH_EVENTS)
        messages, code = await until_closed(ws)
    assert code == 4401
    assert error_codes(messages[0]) == ["UNAUTHORIZED"]
    assert app.state.services.events.subscriber_count == 0


# --- no events before connection_init -------------------------------------------------------


@BOTH_PROTOCOLS
async def test_subscribe_before_connection_init_is_refused_with_4401(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """An operation before connection_init closes the socket (4401) and never listens,
    even with a valid Authorization header on the handshake. On legacy graphql-ws this is
    CVE-2026-35523: a start without connection_init must not skip on_ws_connect."""
    account = await http.register("ada@example.com")
    async with open_socket(app, protocol, headers=bearer(account["accessToken"])) as ws:
        await start(ws, protocol, SESSION_EVENTS)
        await sign_in(http, "ada@example.com")
        messages, code = await until_closed(ws)
    assert code == 4401
    assert messages == []
    assert app.state.services.events.subscriber_count == 0


async def test_legacy_start_before_init_with_a_bad_credential_is_refused(app: Starlette) -> None:
    """Legacy graphql-ws: a start before connection_init on a socket whose credential
    on_ws_connect would refuse is closed (4401), not run anonymously."""
    async with open_socket(app, LEGACY_WS, headers=bearer("not-a-token")) as ws:
        await start(ws, LEGACY_WS, "subscription { authEvents { type } }")
        messages, code = await until_closed(ws)
    assert (messages, code) == ([], 4401)


# --- metrics --------------------------------------------------------------------------------


async def test_admin_receives_metrics_snapshots_every_interval(
    app: Starlette, http: GraphQLClient
) -> None:
    """An admin gets a snapshot of the last intervalSeconds at once, then another one
    every intervalSeconds that counts what happened meanwhile (the legacy protocol's
    first snapshot is checked by the demotion test)."""
    protocol = TRANSPORT_WS
    admin = await make_admin(http, "root@example.com")
    await http.register("ada@example.com")
    await http.login("ada@example.com", "wrong password!")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(admin["accessToken"]))
        await start(ws, protocol, METRICS, {"interval": 1})
        first = await next_item(ws, "metrics")
        assert first["windowSeconds"] == 1
        # root's sign-in and Ada's (registering signs in), Ada's failed attempt.
        assert (first["loginsSucceeded"], first["loginsFailed"]) == (2, 1)
        assert (first["registrations"], first["activeSessions"]) == (1, 2)
        assert first["eventsPerType"]["LOGIN_FAILED"] == 1
        await sign_in(http, "ada@example.com")
        second = await next_item(ws, "metrics")
        assert second["loginsSucceeded"] == 3
        assert second["activeSessions"] == 3


@BOTH_PROTOCOLS
async def test_metrics_are_forbidden_to_non_admins(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """A signed-in non-admin asking for metrics gets FORBIDDEN and no snapshot."""
    account = await http.register("ada@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(account["accessToken"]))
        await start(ws, protocol, METRICS, {"interval": 5})
        assert error_codes(await receive(ws)) == ["FORBIDDEN"]


@pytest.mark.parametrize("interval", [0, 3601, -5])
async def test_metrics_interval_is_validated(
    interval: int, app: Starlette, http: GraphQLClient
) -> None:
    """intervalSeconds outside 1..3600 is a VALIDATION_ERROR."""
    admin = await make_admin(http, "root@example.com")
    async with open_socket(app, TRANSPORT_WS) as ws:
        await init(ws, bearer(admin["accessToken"]))
        await start(ws, TRANSPORT_WS, METRICS, {"interval": interval})
        message = await receive(ws)
    assert error_codes(message) == ["VALIDATION_ERROR"]
    assert message["payload"]["errors"][0]["extensions"]["fields"] == {
        "intervalSeconds": "Between 1 and 3600."
    }


@BOTH_PROTOCOLS
async def test_demoted_admin_loses_metrics_and_everyones_events_with_4403(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """An admin whose role is removed mid-stream stops receiving at once, and the
    connection closes with 4403 (still signed in, no longer allowed)."""
    root = await make_admin(http, "root@example.com")
    deputy = await make_admin(http, "deputy@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(deputy["accessToken"]))
        await start(ws, protocol, METRICS, {"interval": 3600}, op_id="m")
        await start(ws, protocol, AUTH_EVENTS, op_id="e")
        assert (await next_item(ws, "metrics"))["windowSeconds"] == 3600
        await wait_for_subscribers(app, 2)
        demote = "mutation($u: ID!) { setUserRoles(userId: $u, roles: []) { roles } }"
        result = await http.gql(demote, {"u": deputy["user"]["id"]}, token=root["accessToken"])
        assert result.data["setUserRoles"]["roles"] == []
        await http.register("ada@example.com")
        messages, code = await until_closed(ws)
    assert code == 4403
    assert not [m for m in messages if is_data(m)], messages


# --- caps -----------------------------------------------------------------------------------


@BOTH_PROTOCOLS
async def test_per_connection_cap_answers_rate_limited(
    protocol: str, make_app: Callable[..., Starlette], make_client: Callable[..., GraphQLClient]
) -> None:
    """Past ws_max_subscriptions_per_connection, a subscribe gets RATE_LIMITED while the
    others keep running; stopping one frees its place."""
    app = make_app(ws_max_subscriptions_per_connection=2)
    http = make_client(app)
    account = await http.register("ada@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(account["accessToken"]))
        await start(ws, protocol, AUTH_EVENTS, op_id="1")
        await start(ws, protocol, SESSION_EVENTS, op_id="2")
        await wait_for_subscribers(app, 2)
        await start(ws, protocol, AUTH_EVENTS, op_id="3")
        refused = await receive(ws)
        assert refused["id"] == "3"
        assert error_codes(refused) == ["RATE_LIMITED"]

        await stop(ws, protocol, "1")
        await wait_for_subscribers(app, 1)
        if protocol == LEGACY_WS:
            assert await receive(ws) == {"id": "1", "type": "complete"}
        await start(ws, protocol, AUTH_EVENTS, op_id="4")
        await wait_for_subscribers(app, 2)
        await sign_in(http, "ada@example.com")
        received = {(await receive(ws))["id"] for _ in range(2)}
        assert received == {"2", "4"}


@BOTH_PROTOCOLS
async def test_per_user_cap_spans_sockets(
    protocol: str, make_app: Callable[..., Starlette], make_client: Callable[..., GraphQLClient]
) -> None:
    """Past ws_max_subscriptions_per_user live streams across one account's sockets, the
    next subscription is RATE_LIMITED; another account is unaffected."""
    app = make_app(ws_max_subscriptions_per_user=2)
    http = make_client(app)
    ada = await http.register("ada@example.com")
    bob = await http.register("bob@example.com")
    async with (
        open_socket(app, protocol) as first,
        open_socket(app, protocol) as second,
        open_socket(app, protocol) as bobs,
    ):
        await init(first, bearer(ada["accessToken"]))
        await init(second, bearer(ada["accessToken"]))
        await init(bobs, bearer(bob["accessToken"]))
        await start(first, protocol, AUTH_EVENTS, op_id="1")
        await start(first, protocol, SESSION_EVENTS, op_id="2")
        await wait_for_subscribers(app, 2)
        await start(second, protocol, AUTH_EVENTS, op_id="1")
        assert error_codes(await receive(second)) == ["RATE_LIMITED"]
        await start(bobs, protocol, AUTH_EVENTS, op_id="1")
        await wait_for_subscribers(app, 3)

        await stop(first, protocol, "1")
        await wait_for_subscribers(app, 2)
        await start(second, protocol, AUTH_EVENTS, op_id="2")
        await wait_for_subscribers(app, 3)


def test_subscription_slots_release_on_exit() -> None:
    """A user's slots come back when streams end, however they end."""
    slots = SubscriptionSlots(per_user=1)
    with slots.hold("ada"):
        assert slots.held("ada") == 1
        with pytest.raises(RateLimited), slots.hold("ada"):
            pass
        with slots.hold("bob"):
            assert slots.held("bob") == 1
    with pytest.raises(RuntimeError), slots.hold("ada"):
        raise RuntimeError("stream failed")
    assert slots.held("ada") == slots.held("bob") == 0


# --- handshake: cookies and origin ----------------------------------------------------------


async def test_node_auth_access_cookie_authenticates_the_socket(
    make_app: Callable[..., Starlette], make_client: Callable[..., GraphQLClient]
) -> None:
    """A browser signed in through node-auth (JWT in the accessToken cookie) can subscribe
    over a same-origin socket without putting the token in connection_init."""
    app = make_app(rest_dialects=(("node-auth", "/auth"),))
    http = make_client(app)
    await http.http.post("/auth/register", json={"email": "ada@example.com", "password": PASSWORD})
    login = await http.http.post(
        "/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    cookie = http.http.cookies["accessToken"]
    async with open_socket(app, TRANSPORT_WS, headers={"cookie": f"accessToken={cookie}"}) as ws:
        await init(ws)
        await start(ws, TRANSPORT_WS, AUTH_EVENTS)
        await wait_for_subscribers(app, 1)
        await sign_in(http, "ada@example.com")
        assert (await next_item(ws, "authEvents"))["type"] == "LOGIN_SUCCEEDED"


async def test_modularauth_session_cookie_authenticates_and_revocation_closes(
    make_app: Callable[..., Starlette], make_client: Callable[..., GraphQLClient]
) -> None:
    """A browser signed in through ModularAuth (opaque session in the sid cookie) can
    subscribe; signing out everywhere reports its session REVOKED and closes with 4401."""
    app = make_app(rest_dialects=(("modularauth", "/ma"),))
    http = make_client(app)
    await http.http.get("/ma/me")  # the _csrf cookie, as a browser app gets it first
    csrf = {"x-csrf-token": http.http.cookies["_csrf"]}
    body = {"email": "ada@example.com", "password": PASSWORD}
    registered = await http.http.post("/ma/register", json=body, headers=csrf)
    assert registered.status_code == 201, registered.text
    sid = http.http.cookies["sid"]
    async with open_socket(app, LEGACY_WS, headers={"cookie": f"sid={sid}"}) as ws:
        await init(ws)
        await start(ws, LEGACY_WS, SESSION_EVENTS)
        await wait_for_subscribers(app, 1)
        token = (await sign_in(http, "ada@example.com"))["accessToken"]
        assert (await next_item(ws, "sessionEvents"))["type"] == "CREATED"
        await http.gql("mutation { logoutAll }", token=token)
        messages, code = await until_closed(ws)
    assert code == 4401
    events = [m["payload"]["data"]["sessionEvents"] for m in messages if is_data(m)]
    assert [(e["type"], e["session"]["current"]) for e in events] == [
        ("REVOKED", False),
        ("REVOKED", True),
    ]


async def test_invalid_or_unmounted_cookies_leave_the_socket_anonymous(
    make_app: Callable[..., Starlette], make_client: Callable[..., GraphQLClient]
) -> None:
    """A stale cookie (or one of a dialect that is not mounted) is not a credential: the
    socket connects anonymously and subscriptions answer UNAUTHORIZED."""
    app = make_app(rest_dialects=(("node-auth", "/auth"),))
    http = make_client(app)
    account = await http.register("ada@example.com")
    cookies = f"accessToken=stale; sid=whatever; token={account['accessToken']}"
    async with open_socket(app, TRANSPORT_WS, headers={"cookie": cookies}) as ws:
        await init(ws)
        await start(ws, TRANSPORT_WS, "{ me { email } }", op_id="q")
        assert (await receive(ws))["payload"] == {"data": {"me": None}}
        await start(ws, TRANSPORT_WS, AUTH_EVENTS)
        message = await receive(ws)
        while message.get("id") != "1":
            message = await receive(ws)
        assert error_codes(message) == ["UNAUTHORIZED"]


async def _handshake_accepted(app: Starlette, headers: dict[str, str]) -> bool:
    try:
        async with open_socket(app, TRANSPORT_WS, headers=headers) as ws:
            await init(ws)
            return True
    except (WebSocketDisconnect, WebSocketUpgradeError):
        return False


async def test_handshake_origin_is_checked_against_cors_origins(
    make_app: Callable[..., Starlette],
) -> None:
    """A page on an origin listed in AUTHQL_CORS_ORIGINS may open a socket, a foreign one
    may not, and a client sending no Origin (not a browser) may."""
    app = make_app(cors_origins=("https://app.example",))
    assert await _handshake_accepted(app, {"origin": "https://app.example"})
    assert not await _handshake_accepted(app, {"origin": "https://evil.example"})
    assert await _handshake_accepted(app, {})


@BOTH_PROTOCOLS
async def test_a_client_vanishing_mid_stream_logs_no_error(
    protocol: str, app: Starlette, http: GraphQLClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber whose socket drops is cleaned up quietly: its stream stops listening
    to the event bus (and frees its slot) and no error is logged."""
    account = await http.register("ada@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(account["accessToken"]))
        await start(ws, protocol, AUTH_EVENTS)
        await wait_for_subscribers(app, 1)
    for _ in range(3):
        await sign_in(http, "ada@example.com")
    await wait_for_subscribers(app, 0)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text


class _VanishedSocket:
    """A websocket adapter whose peer is gone: every send fails as Strawberry reports it."""

    def __init__(self) -> None:
        self.sends = 0

    async def send_json(self, message: object) -> None:
        self.sends += 1
        raise WebSocketDisconnected


@pytest.mark.parametrize("handler_class", [AuthqlTransportWSHandler, AuthqlLegacyWSHandler])
async def test_send_to_a_vanished_client_is_not_an_error(handler_class: type[Any]) -> None:
    """When the client disappears between two events, the send is dropped quietly (no worker
    error with a traceback) and nothing more is sent on that connection."""
    socket = _VanishedSocket()
    options: dict[str, Any] = (
        {"connection_init_wait_timeout": dt.timedelta(seconds=1)}
        if handler_class is AuthqlTransportWSHandler
        else {"keep_alive": False, "keep_alive_interval": None}
    )
    handler = handler_class(
        view=None, websocket=socket, context=None, root_value=None, schema=None, **options
    )
    await handler.send_message({"id": "1", "type": "next", "payload": {"data": {}}})
    await handler.send_message({"id": "1", "type": "complete"})
    assert handler.closed
    assert socket.sends == 1
