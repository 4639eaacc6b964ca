"""GraphQL over websockets: both protocols, connection_init authentication, event isolation,
protocol errors and the handshake origin check."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, WebSocketUpgradeError, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from starlette.applications import Starlette

from authql.resolvers.accounts import create_admin
from tests.support import PASSWORD, GraphQLClient

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
BOTH_PROTOCOLS = pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
TIMEOUT = 5.0

AUTH_EVENTS = "subscription { authEvents { type userId } }"
AUTH_EVENTS_OF = "subscription($u: ID) { authEvents(userId: $u) { type userId } }"


@contextlib.asynccontextmanager
async def open_socket(
    app: Starlette, protocol: str, *, headers: dict[str, str] | None = None
) -> AsyncIterator[AsyncWebSocketSession]:
    """A websocket to the in-process app's /graphql speaking ``protocol``."""
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


async def close_code(ws: AsyncWebSocketSession) -> int:
    """Wait for the server to close the socket and return its close code."""
    with pytest.raises(WebSocketDisconnect) as closed:
        for _ in range(10):
            await receive(ws)
    return closed.value.code


async def init(ws: AsyncWebSocketSession, payload: dict[str, Any] | None = None) -> None:
    """Send connection_init and expect connection_ack."""
    await ws.send_json({"type": "connection_init", "payload": payload or {}})
    ack = await receive(ws)
    assert ack["type"] == "connection_ack", ack


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


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


async def next_result(ws: AsyncWebSocketSession) -> dict[str, Any]:
    """The payload of the next result message (next / data) of any operation."""
    message = await receive(ws)
    assert message["type"] in ("next", "data"), message
    return message["payload"]  # type: ignore[no-any-return]


async def next_event(ws: AsyncWebSocketSession) -> dict[str, Any]:
    """The next authEvents item, asserting the result carried no errors."""
    payload = await next_result(ws)
    assert not payload.get("errors"), payload
    return payload["data"]["authEvents"]  # type: ignore[no-any-return]


async def operation_errors(ws: AsyncWebSocketSession) -> list[dict[str, Any]]:
    """The errors the next message reports for an operation, whatever its framing."""
    message = await receive(ws)
    assert message["type"] in ("error", "next", "data"), message
    payload = message["payload"]
    if message["type"] == "error":
        return payload if isinstance(payload, list) else [payload]
    assert payload.get("errors"), message
    return payload["errors"]  # type: ignore[no-any-return]


async def wait_for_subscribers(app: Starlette, count: int) -> None:
    """Poll (for at most TIMEOUT seconds) until ``count`` subscriptions listen on the bus."""
    step = 0.005
    for _ in range(int(TIMEOUT / step)):
        if app.state.services.events.subscriber_count >= count:
            return
        await asyncio.sleep(step)
    pytest.fail(f"expected {count} subscriber(s) on the event bus")


@pytest.fixture
def app(make_app: Callable[..., Starlette]) -> Starlette:
    """One app shared by the HTTP client and the websockets of a test."""
    return make_app()


@pytest.fixture
def http(app: Starlette, make_client: Callable[..., GraphQLClient]) -> GraphQLClient:
    """GraphQL over HTTP to ``app``."""
    return make_client(app)


# --- authenticated subscriptions ------------------------------------------------------------


@BOTH_PROTOCOLS
async def test_subscriber_receives_own_login_and_logout(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """A signed-in socket receives the events of its own account as they happen."""
    account = await http.register("ada@example.com")
    user_id = account["user"]["id"]
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(account["accessToken"]))
        await start(ws, protocol, AUTH_EVENTS)
        await wait_for_subscribers(app, 1)

        second = (await http.login("ada@example.com")).data["login"]
        assert await next_event(ws) == {"type": "LOGIN_SUCCEEDED", "userId": user_id}
        logout = await http.gql("mutation { logout }", token=second["accessToken"])
        assert logout.data["logout"] is True
        assert await next_event(ws) == {"type": "LOGOUT", "userId": user_id}


@BOTH_PROTOCOLS
async def test_subscription_filters_by_event_type(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """authEvents(types: ...) delivers only the listed types."""
    account = await http.register("ada@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(account["accessToken"]))
        await start(ws, protocol, "subscription { authEvents(types: [LOGOUT]) { type } }")
        await wait_for_subscribers(app, 1)
        second = (await http.login("ada@example.com")).data["login"]
        await http.gql("mutation { logout }", token=second["accessToken"])
        assert await next_event(ws) == {"type": "LOGOUT"}


@BOTH_PROTOCOLS
async def test_subscribers_never_see_other_users_events(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """A non-admin subscriber receives only their own account's events."""
    await http.register("ada@example.com")
    bob = await http.register("bob@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(bob["accessToken"]))
        await start(ws, protocol, AUTH_EVENTS)
        await wait_for_subscribers(app, 1)

        assert (await http.login("ada@example.com")).data["login"]["status"] == "OK"
        await http.login("ada@example.com", "wrong password!")
        assert (await http.login("bob@example.com")).data["login"]["status"] == "OK"
        # Events are delivered in publish order: had Ada's leaked, they would come first.
        assert await next_event(ws) == {
            "type": "LOGIN_SUCCEEDED",
            "userId": bob["user"]["id"],
        }


@BOTH_PROTOCOLS
async def test_non_admin_cannot_watch_another_user(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """authEvents(userId: <someone else>) is FORBIDDEN for a non-admin."""
    ada = await http.register("ada@example.com")
    bob = await http.register("bob@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(bob["accessToken"]))
        await start(ws, protocol, AUTH_EVENTS_OF, {"u": ada["user"]["id"]})
        errors = await operation_errors(ws)
    assert errors[0]["extensions"]["code"] == "FORBIDDEN"


@BOTH_PROTOCOLS
async def test_admin_receives_every_users_events(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """An admin subscriber sees other accounts' events, and may filter to one account."""
    await create_admin(http.services.passwords, email="root@example.com", password=PASSWORD)
    root = (await http.login("root@example.com")).data["login"]
    ada = await http.register("ada@example.com")
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(root["accessToken"]))
        await start(ws, protocol, AUTH_EVENTS_OF, {"u": ada["user"]["id"]})
        await wait_for_subscribers(app, 1)
        await http.login("root@example.com")
        await http.login("ada@example.com")
        assert await next_event(ws) == {"type": "LOGIN_SUCCEEDED", "userId": ada["user"]["id"]}


@BOTH_PROTOCOLS
async def test_subscription_ends_when_its_session_is_logged_out(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """After the socket's own session is logged out, no further events reach it."""
    account = await http.register("ada@example.com")
    user_id = account["user"]["id"]
    async with open_socket(app, protocol) as ws:
        await init(ws, bearer(account["accessToken"]))
        await start(ws, protocol, AUTH_EVENTS)
        await wait_for_subscribers(app, 1)
        await http.gql("mutation { logout }", token=account["accessToken"])
        await http.login("ada@example.com")
        message = await receive(ws)
        if message["type"] in ("next", "data"):
            # The logout itself may still be reported; nothing after it.
            assert message["payload"]["data"]["authEvents"] == {
                "type": "LOGOUT",
                "userId": user_id,
            }
            message = await receive(ws)
        assert message["type"] in ("complete", "error"), message


# --- refused credentials --------------------------------------------------------------------


async def test_invalid_token_closes_transport_ws_with_4403(app: Starlette) -> None:
    """graphql-transport-ws: a bad bearer token in connection_init closes the socket (4403)."""
    async with open_socket(app, TRANSPORT_WS) as ws:
        await ws.send_json({"type": "connection_init", "payload": bearer("not-a-token")})
        assert await close_code(ws) == 4403


async def test_logged_out_token_is_refused_on_connect(app: Starlette, http: GraphQLClient) -> None:
    """A genuine token whose session was logged out cannot open an authenticated socket."""
    account = await http.register("ada@example.com")
    await http.gql("mutation { logout }", token=account["accessToken"])
    async with open_socket(app, TRANSPORT_WS) as ws:
        await ws.send_json({"type": "connection_init", "payload": bearer(account["accessToken"])})
        assert await close_code(ws) == 4403


async def test_invalid_token_gets_connection_error_on_legacy_ws(app: Starlette) -> None:
    """Legacy graphql-ws: a bad bearer token gets connection_error, never an ack."""
    async with open_socket(app, LEGACY_WS) as ws:
        await ws.send_json({"type": "connection_init", "payload": bearer("not-a-token")})
        message = await receive(ws)
        assert message["type"] == "connection_error", message
        assert message["payload"].get("code") == "UNAUTHORIZED"


@BOTH_PROTOCOLS
async def test_anonymous_subscription_is_unauthorized(protocol: str, app: Starlette) -> None:
    """A socket without credentials may connect, but authEvents answers UNAUTHORIZED."""
    async with open_socket(app, protocol) as ws:
        await init(ws)
        await start(ws, protocol, AUTH_EVENTS)
        errors = await operation_errors(ws)
    assert errors[0]["extensions"]["code"] == "UNAUTHORIZED"
    assert app.state.services.events.subscriber_count == 0


# --- graphql-transport-ws specifics ---------------------------------------------------------


async def test_queries_over_transport_ws_see_the_connection_user(
    app: Starlette, http: GraphQLClient
) -> None:
    """A query sent over graphql-transport-ws runs as the socket's authenticated user."""
    account = await http.register("ada@example.com")
    async with open_socket(app, TRANSPORT_WS) as ws:
        await init(ws, bearer(account["accessToken"]))
        await start(ws, TRANSPORT_WS, "{ me { email } }")
        payload = await next_result(ws)
        assert payload == {"data": {"me": {"email": "ada@example.com"}}}
        assert await receive(ws) == {"id": "1", "type": "complete"}


async def test_queries_over_anonymous_socket_see_nobody(app: Starlette) -> None:
    """Without credentials, me over the socket is null."""
    async with open_socket(app, TRANSPORT_WS) as ws:
        await init(ws)
        await start(ws, TRANSPORT_WS, "{ me { email } }")
        assert await next_result(ws) == {"data": {"me": None}}


async def test_socket_queries_stop_seeing_a_logged_out_user(
    app: Starlette, http: GraphQLClient
) -> None:
    """Once the socket's session is logged out, queries over that socket are anonymous."""
    account = await http.register("ada@example.com")
    async with open_socket(app, TRANSPORT_WS) as ws:
        await init(ws, bearer(account["accessToken"]))
        await http.gql("mutation { logout }", token=account["accessToken"])
        assert (await http.me(account["accessToken"])) is None  # refused over HTTP at once
        await start(ws, TRANSPORT_WS, "{ me { email } }")
        payload = await next_result(ws)
        assert payload.get("errors") or payload["data"]["me"] is None, payload


@BOTH_PROTOCOLS
async def test_operation_before_connection_init_closes_with_4401(
    protocol: str, app: Starlette, http: GraphQLClient
) -> None:
    """An operation sent before connection_init closes the socket (4401), on both protocols,
    even when the handshake itself carried a valid Authorization header."""
    account = await http.register("ada@example.com")
    async with open_socket(app, protocol, headers=bearer(account["accessToken"])) as ws:
        await start(ws, protocol, AUTH_EVENTS)
        assert await close_code(ws) == 4401
    assert app.state.services.events.subscriber_count == 0


async def test_handshake_authorization_header_is_honoured_and_checked(
    app: Starlette, http: GraphQLClient
) -> None:
    """A non-browser client may authenticate with the handshake's Authorization header; a bad
    one is refused at connection_init (4403)."""
    account = await http.register("ada@example.com")
    async with open_socket(app, TRANSPORT_WS, headers=bearer(account["accessToken"])) as ws:
        await init(ws)
        await start(ws, TRANSPORT_WS, "{ me { email } }")
        assert await next_result(ws) == {"data": {"me": {"email": "ada@example.com"}}}
    async with open_socket(app, TRANSPORT_WS, headers=bearer("not-a-token")) as ws:
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert await close_code(ws) == 4403


# --- handshake origin -----------------------------------------------------------------------


async def _handshake_accepted(app: Starlette, origin: str) -> bool:
    try:
        async with open_socket(app, TRANSPORT_WS, headers={"origin": origin}) as ws:
            await init(ws)
            return True
    except (WebSocketDisconnect, WebSocketUpgradeError):
        return False


async def test_cross_origin_handshake_is_refused(make_app: Callable[..., Starlette]) -> None:
    """A browser page on an origin outside cors_origins cannot open a socket; a listed one can."""
    app = make_app(cors_origins=("https://app.example",))
    assert await _handshake_accepted(app, "https://app.example")
    assert not await _handshake_accepted(app, "https://evil.example")
    assert not await _handshake_accepted(app, "null")
