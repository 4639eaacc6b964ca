"""node-auth's tools router at /tools: tracked events, the telemetry query, notifications,
inbound webhooks, and the server-sent event stream (read from a real uvicorn server on
127.0.0.1, because httpx's ASGI transport buffers whole responses)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from authql.models import Tenant, TrackedEvent, User
from authql.resolvers import inbound_webhooks, tools
from authql.resolvers.accounts import create_admin
from authql.services.clock import FrozenClock
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]

TOOLS = "/tools"
DIALECTS = (("node-auth", "/auth"),)
ADMIN_EMAIL = "root@example.com"


# --- helpers ---------------------------------------------------------------------------------


@dataclass
class Account:
    """A signed-in account: its access token, user id and session id."""

    token: str
    user_id: str
    session_id: str

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


def tools_client(make_client: MakeClient, **overrides: Any) -> GraphQLClient:
    return make_client(rest_dialects=DIALECTS, **overrides)


async def sign_up(client: GraphQLClient, email: str) -> Account:
    """Register ``email`` (which signs it in) over GraphQL."""
    payload = await client.register(email)
    return Account(payload["accessToken"], payload["user"]["id"], payload["session"]["id"])


async def sign_in(client: GraphQLClient, email: str) -> Account:
    """A new session for an existing account."""
    login = (await client.login(email)).data["login"]
    return Account(login["accessToken"], login["user"]["id"], login["session"]["id"])


async def admin(client: GraphQLClient) -> Account:
    """The administrator, signed in."""
    await create_admin(client.services.passwords, email=ADMIN_EMAIL, password=PASSWORD)
    return await sign_in(client, ADMIN_EMAIL)


async def api_key(client: GraphQLClient, root: Account, *scopes: str, **fields: Any) -> str:
    """A raw API key made through the admin API."""
    response = await client.http.post(
        "/admin/api/api-keys",
        json={"name": "machine", "scopes": list(scopes), **fields},
        headers=root.auth,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["rawKey"])


def key_header(raw: str) -> dict[str, str]:
    return {"authorization": f"ApiKey {raw}"}


async def telemetry(client: GraphQLClient, headers: dict[str, str], **params: Any) -> Any:
    response = await client.http.get(f"{TOOLS}/telemetry", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@contextlib.asynccontextmanager
async def serving(client: GraphQLClient) -> AsyncIterator[str]:
    """The client's app on a real uvicorn server on this loop (so it shares the test's
    database and clock); yields its base URL and always stops it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        client.app, lifespan="off", log_config=None, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Frame:
    """One server-sent event (``comment`` for a ``: ...`` line)."""

    event: str | None = None
    id: str | None = None
    data: Any = None
    comment: str | None = None


class EventStream:
    """Reads frames from an open ``text/event-stream`` response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def _read(self) -> Frame | None:
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line.startswith(":"):
                return Frame(comment=line[1:].strip())
            if line == "":
                if fields:
                    data = json.loads(fields["data"]) if "data" in fields else None
                    return Frame(event=fields.get("event"), id=fields.get("id"), data=data)
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        return None

    async def next(self, within: float = 3.0) -> Frame | None:
        """The next frame or comment; None when the server ended the stream."""
        return await asyncio.wait_for(self._read(), within)

    async def event(self, within: float = 3.0) -> Frame | None:
        """The next frame that is not a heartbeat; None at the end of the stream."""
        while True:
            frame = await self.next(within)
            if frame is None or frame.comment is None:
                return frame


@contextlib.asynccontextmanager
async def open_stream(
    base_url: str, *, headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[EventStream]:
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=5.0) as http,
        http.stream("GET", f"{TOOLS}/stream", params=params, headers=headers or {}) as response,
    ):
        assert response.status_code == 200, await response.aread()
        yield EventStream(response)


async def until(condition: Callable[[], bool], seconds: float = 3.0) -> None:
    """Wait (briefly polling) until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


# --- authentication --------------------------------------------------------------------------


async def test_routes_refuse_callers_without_a_credential(make_client: MakeClient) -> None:
    """Without a token or API key every protected route is 401 API_KEY_MISSING."""
    client = tools_client(make_client)
    for method, path in (
        ("POST", "/track/app.opened"),
        ("GET", "/telemetry"),
        ("POST", "/notify/global"),
        ("GET", "/stream"),
    ):
        response = await client.http.request(method, TOOLS + path)
        assert response.status_code == 401, path
        assert response.json() == {"error": "API key is required", "code": "API_KEY_MISSING"}


async def test_a_refused_access_token_is_401(make_client: MakeClient) -> None:
    """A tampered or logged-out access token is 401 INVALID_TOKEN."""
    client = tools_client(make_client)
    ada = await sign_up(client, "ada@example.com")
    tampered = {"authorization": f"Bearer {ada.token[:-4]}AAAA"}
    response = await client.http.post(f"{TOOLS}/track/app.opened", headers=tampered)
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid or expired access token", "code": "INVALID_TOKEN"}
    assert (await client.http.post("/auth/logout", headers=ada.auth)).status_code == 200
    response = await client.http.get(f"{TOOLS}/telemetry", headers=ada.auth)
    assert response.status_code == 401


async def test_api_key_failures_use_node_auths_codes(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Unknown, revoked and expired keys are 401; a key used from another address or
    without the route's scope is 403; each with node-auth's code."""
    client = tools_client(make_client)
    root = await admin(client)
    track = f"{TOOLS}/track/app.opened"

    async def status_of(headers: dict[str, str]) -> tuple[int, Any]:
        response = await client.http.post(track, headers=headers)
        return response.status_code, response.json()

    assert await status_of(key_header("aq_not-a-real-key")) == (
        401,
        {"error": "Invalid API key", "code": "API_KEY_INVALID"},
    )
    revoked = await api_key(client, root, "tools:track")
    listed = (await client.http.get("/admin/api/api-keys", headers=root.auth)).json()["keys"]
    await client.http.delete(f"/admin/api/api-keys/{listed[0]['id']}/revoke", headers=root.auth)
    assert await status_of(key_header(revoked)) == (
        401,
        {"error": "API key has been revoked", "code": "API_KEY_REVOKED"},
    )
    soon = (clock.now() + dt.timedelta(minutes=5)).isoformat()
    expiring = await api_key(client, root, "*", expiresAt=soon)
    assert (await status_of(key_header(expiring)))[0] == 202
    clock.advance(301)
    assert await status_of(key_header(expiring)) == (
        401,
        {"error": "API key has expired", "code": "API_KEY_EXPIRED"},
    )
    fenced = await api_key(client, root, "*", allowedIps=["10.0.0.0/8"])
    assert await status_of(key_header(fenced)) == (
        403,
        {"error": "IP address not allowed for this API key", "code": "API_KEY_IP_BLOCKED"},
    )
    reader = await api_key(client, root, "tools:telemetry")
    assert await status_of(key_header(reader)) == (
        403,
        {"error": "API key lacks the required scope", "code": "API_KEY_INSUFFICIENT_SCOPE"},
    )
    allowed = await api_key(client, root, "tools:*")
    assert (await status_of({"x-api-key": allowed}))[0] == 202


# --- track and telemetry -------------------------------------------------------------------


async def test_users_track_their_own_events(make_client: MakeClient) -> None:
    """A user's tracked event is stored as theirs (202 {ok: true}) and read back from
    /telemetry with its data, session and correlation id."""
    client = tools_client(make_client)
    ada = await sign_up(client, "ada@example.com")
    response = await client.http.post(
        f"{TOOLS}/track/checkout.completed",
        json={"data": {"total": 42}, "sessionId": ada.session_id, "correlationId": "order-7"},
        headers=ada.auth,
    )
    assert response.status_code == 202
    assert response.json() == {"ok": True}
    row = await TrackedEvent.get(name="checkout.completed")
    assert str(row.user_id) == ada.user_id
    events = await telemetry(client, ada.auth, event="checkout.completed")
    assert len(events) == 1
    assert events[0]["data"] == {"total": 42}
    assert events[0]["userId"] == ada.user_id
    assert events[0]["sessionId"] == ada.session_id
    assert events[0]["correlationId"] == "order-7"
    assert events[0]["timestamp"].endswith("Z")


async def test_track_validates_its_input(make_client: MakeClient) -> None:
    """Malformed event names and ids are 400 VALIDATION_ERROR; nothing is stored."""
    client = tools_client(make_client)
    ada = await sign_up(client, "ada@example.com")
    for name, body in (
        ("Not-Lower", {}),
        ("x" * 101, {}),
        ("app.opened", {"sessionId": "not-an-id"}),
        ("app.opened", {"userId": 7}),
    ):
        response = await client.http.post(f"{TOOLS}/track/{name}", json=body, headers=ada.auth)
        assert response.status_code == 400, name
        assert response.json()["code"] == "VALIDATION_ERROR"
    assert await TrackedEvent.all().count() == 0


async def test_users_cannot_track_for_someone_else(make_client: MakeClient) -> None:
    """Another user's id, another session or a tenant not one's own is 403; an API key may
    track for anyone."""
    client = tools_client(make_client)
    root = await admin(client)
    ada = await sign_up(client, "ada@example.com")
    bob = await sign_up(client, "bob@example.com")
    for body in ({"userId": bob.user_id}, {"sessionId": bob.session_id}, {"tenantId": "acme"}):
        response = await client.http.post(f"{TOOLS}/track/spoof", json=body, headers=ada.auth)
        assert response.status_code == 403, body
        assert response.json()["code"] == "FORBIDDEN"
    key = await api_key(client, root, "tools:track")
    response = await client.http.post(
        f"{TOOLS}/track/billing.charged", json={"userId": bob.user_id}, headers=key_header(key)
    )
    assert response.status_code == 202
    assert str((await TrackedEvent.get(name="billing.charged")).user_id) == bob.user_id
    assert not await TrackedEvent.exists(name="spoof")


async def test_telemetry_shows_users_only_their_own_events(make_client: MakeClient) -> None:
    """A user reads their tracked and auth events (under node-auth's dotted names) and
    never another user's; asking for another user is 403."""
    client = tools_client(make_client)
    ada = await sign_up(client, "ada@example.com")
    bob = await sign_up(client, "bob@example.com")
    await client.http.post(f"{TOOLS}/track/ada.did", headers=ada.auth)
    await client.http.post(f"{TOOLS}/track/bob.did", headers=bob.auth)
    mine = await telemetry(client, ada.auth)
    names = {event["event"] for event in mine}
    assert {"ada.did", "identity.user.created"} <= names
    assert "bob.did" not in names
    assert {event["userId"] for event in mine} == {ada.user_id}
    created = next(event for event in mine if event["event"] == "identity.user.created")
    assert created["data"]["type"] == "REGISTERED"
    assert created["data"]["success"] is True
    response = await client.http.get(
        f"{TOOLS}/telemetry", params={"userId": bob.user_id}, headers=ada.auth
    )
    assert response.status_code == 403


async def test_admins_and_api_keys_read_everyones_telemetry(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Admins and telemetry-scoped keys read all events, filtered by event, user and time,
    newest first, paged by limit and offset."""
    client = tools_client(make_client)
    root = await admin(client)
    ada = await sign_up(client, "ada@example.com")
    start = clock.now()
    for index in range(3):
        clock.advance(10)
        await client.http.post(
            f"{TOOLS}/track/step.done", json={"data": {"n": index}}, headers=ada.auth
        )
    key = await api_key(client, root, "tools:telemetry")
    for headers in (root.auth, key_header(key)):
        everything = await telemetry(client, headers)
        assert {ada.user_id, root.user_id} <= {event.get("userId") for event in everything}
        steps = await telemetry(client, headers, event="step.done", userId=ada.user_id)
        assert [event["data"]["n"] for event in steps] == [2, 1, 0]
        page = await telemetry(client, headers, event="step.done", limit=1, offset=1)
        assert [event["data"]["n"] for event in page] == [1]
        window = await telemetry(
            client,
            headers,
            event="step.done",
            **{
                "from": (start + dt.timedelta(seconds=15)).isoformat(),
                "to": (start + dt.timedelta(seconds=25)).isoformat(),
            },
        )
        assert [event["data"]["n"] for event in window] == [1]
        logins = await telemetry(client, headers, event="identity.auth.login.success")
        assert {event["event"] for event in logins} == {"identity.auth.login.success"}
        assert root.user_id in {event["userId"] for event in logins}
    for params in ({"limit": 101}, {"limit": "many"}, {"from": "yesterday"}):
        response = await client.http.get(f"{TOOLS}/telemetry", params=params, headers=root.auth)
        assert response.status_code == 400, params


# --- notify --------------------------------------------------------------------------------


async def test_notify_permissions(make_client: MakeClient) -> None:
    """Users may notify only their own user and session topics; admins and notify-scoped
    keys any topic; unknown topics and types are 400."""
    client = tools_client(make_client)
    root = await admin(client)
    ada = await sign_up(client, "ada@example.com")
    bob = await sign_up(client, "bob@example.com")

    async def notify(target: str, headers: dict[str, str], **body: Any) -> int:
        response = await client.http.post(
            f"{TOOLS}/notify/{target}", json={"data": {"hi": 1}, **body}, headers=headers
        )
        if response.status_code == 202:
            assert response.json() == {"ok": True}
        return response.status_code

    assert await notify(f"user:{ada.user_id}", ada.auth) == 202
    assert await notify(f"session:{ada.session_id}", ada.auth) == 202
    assert await notify(f"user:{bob.user_id}", ada.auth) == 403
    assert await notify("global", ada.auth) == 403
    assert await notify(f"user:{ada.user_id}", ada.auth, userId=bob.user_id) == 403
    assert await notify(f"user:{bob.user_id}", root.auth) == 202
    assert await notify("global", key_header(await api_key(client, root, "tools:notify"))) == 202
    assert await notify("everyone", root.auth) == 400
    assert await notify("global", root.auth, type="line\nbreak") == 400
    assert await notify("global", root.auth, metadata="flat") == 400


# --- inbound webhooks ----------------------------------------------------------------------


async def test_generic_webhook_records_signed_deliveries_once(make_client: MakeClient) -> None:
    """A delivery signed with the provider's secret is recorded as
    webhook.generic.received (once per delivery id); a bad signature is 401."""
    client = tools_client(make_client)
    secret = inbound_webhooks.signing_secret(client.services.settings, "generic")
    body = json.dumps({"order": 7}).encode()
    headers = {
        "content-type": "application/json",
        "x-webhook-signature": sign(body, secret),
        "x-webhook-event": "order.paid",
        "x-webhook-delivery": "delivery-1",
    }
    url = f"{TOOLS}/webhook/generic"
    for _ in range(2):
        response = await client.http.post(url, content=body, headers=headers)
        assert response.status_code == 200
        assert response.json() == {"ok": True}
    rows = await TrackedEvent.filter(name="webhook.generic.received")
    assert len(rows) == 1
    assert rows[0].data == {"event": "order.paid", "payload": {"order": 7}}
    assert rows[0].correlation_id == "delivery-1"
    forged = {**headers, "x-webhook-signature": sign(body, "guessed")}
    response = await client.http.post(url, content=body, headers=forged)
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid webhook signature", "code": "INVALID_SIGNATURE"}
    unsigned = {"content-type": "application/json"}
    assert (await client.http.post(url, content=body, headers=unsigned)).status_code == 401


async def test_webhook_errors_follow_node_auth(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Unknown providers are 404, unreadable payloads 400, and a handler that crashes is
    logged while the sender still hears 200 {ok: true}."""
    client = tools_client(make_client)
    response = await client.http.post(f"{TOOLS}/webhook/nobody", json={})
    assert response.status_code == 404
    assert response.json() == {"error": "Unknown webhook provider"}
    secret = inbound_webhooks.signing_secret(client.services.settings, "generic")
    junk = b"{not json"
    response = await client.http.post(
        f"{TOOLS}/webhook/generic",
        content=junk,
        headers={"x-webhook-signature": sign(junk, secret)},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "Webhook processing failed"}

    async def explodes(
        ctx: Any, request: inbound_webhooks.InboundRequest
    ) -> inbound_webhooks.InboundEvent:
        raise RuntimeError("handler bug")

    monkeypatch.setitem(inbound_webhooks._HANDLERS, "explodes", explodes)
    with caplog.at_level(logging.ERROR, logger="authql.inbound_webhooks"):
        response = await client.http.post(f"{TOOLS}/webhook/explodes", json={"a": 1})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert "explodes" in caplog.text
    assert await TrackedEvent.all().count() == 0


async def test_openapi_lists_the_tools_routes(make_client: MakeClient) -> None:
    """/tools/openapi.json documents every route of the router."""
    client = tools_client(make_client)
    document = (await client.http.get(f"{TOOLS}/openapi.json")).json()
    assert {
        "/tools/track/{eventName}",
        "/tools/telemetry",
        "/tools/notify/{target}",
        "/tools/stream",
        "/tools/webhook/{provider}",
    } <= set(document["paths"])


# --- the stream ----------------------------------------------------------------------------

UPDATE_PROFILE = "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { id } }"


async def touch_profile(client: GraphQLClient, account: Account, name: str) -> None:
    """Something that publishes an auth event (PROFILE_UPDATED) of ``account``."""
    result = await client.gql(UPDATE_PROFILE, {"input": {"name": name}}, token=account.token)
    assert result.data


async def test_stream_greets_with_the_granted_topics(make_client: MakeClient) -> None:
    """The stream is text/event-stream, uncached and unbuffered, and opens with a
    `connected` event naming its topics: a user's own when none are asked for."""
    client = tools_client(make_client)
    ada = await sign_up(client, "ada@example.com")
    async with serving(client) as base, open_stream(base, headers=ada.auth) as events:
        headers = events.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        connected = await events.event()
        assert connected is not None
        assert connected.event == "connected"
        assert connected.data["type"] == "connected"
        assert connected.data["topic"] == "meta"
        assert connected.id == connected.data["id"]
        assert connected.data["rawData"]["connectionId"]
        assert connected.data["rawData"]["topics"] == [
            "global",
            f"user:{ada.user_id}",
            f"session:{ada.session_id}",
        ]


async def test_stream_delivers_own_auth_events_and_never_others(
    make_client: MakeClient,
) -> None:
    """A user's own auth events arrive (dotted name, on their user topic); another user's
    never do, not even on `global`."""
    client = tools_client(make_client)
    ada = await sign_up(client, "ada@example.com")
    bob = await sign_up(client, "bob@example.com")
    async with serving(client) as base, open_stream(base, headers=ada.auth) as events:
        await events.event()
        await touch_profile(client, bob, "Bob")
        await sign_in(client, "bob@example.com")
        await touch_profile(client, ada, "Ada")
        frame = await events.event()
        assert frame is not None
        assert frame.event == "identity.user.updated"
        assert frame.data["topic"] == f"user:{ada.user_id}"
        assert frame.data["userId"] == ada.user_id
        raw = frame.data["rawData"]
        assert raw["event"] == "identity.user.updated"
        assert raw["userId"] == ada.user_id
        assert raw["data"]["type"] == "PROFILE_UPDATED"
        assert bob.user_id not in json.dumps(frame.data)


async def test_stream_drops_topics_the_caller_may_not_hear(make_client: MakeClient) -> None:
    """Asking for another user's topic silently drops it; notifications reach only the
    topics they target, and tracked events their user's topics."""
    client = tools_client(make_client)
    root = await admin(client)
    ada = await sign_up(client, "ada@example.com")
    bob = await sign_up(client, "bob@example.com")
    topics = f"user:{bob.user_id},global,session:{bob.session_id}"
    async with serving(client) as base, open_stream(base, headers=ada.auth, topics=topics) as ev:
        connected = await ev.event()
        assert connected is not None
        assert connected.data["rawData"]["topics"] == ["global"]
        await client.http.post(
            f"{TOOLS}/notify/user:{bob.user_id}", json={"data": "for bob"}, headers=root.auth
        )
        await client.http.post(f"{TOOLS}/track/bob.secret", headers=bob.auth)
        await client.http.post(
            f"{TOOLS}/notify/global",
            json={"data": {"text": "maintenance"}, "type": "announcement", "metadata": {"p": 1}},
            headers=root.auth,
        )
        frame = await ev.event()
        assert frame is not None
        assert frame.event == "announcement"
        assert frame.data["topic"] == "global"
        assert frame.data["rawData"] == {"text": "maintenance"}
        assert frame.data["metadata"] == {"p": 1}


async def test_stream_delivers_notifications_and_tracked_events(make_client: MakeClient) -> None:
    """An admin's notification to a user and the user's own tracked event reach the user's
    stream once each."""
    client = tools_client(make_client)
    root = await admin(client)
    ada = await sign_up(client, "ada@example.com")
    async with serving(client) as base, open_stream(base, headers=ada.auth) as events:
        await events.event()
        response = await client.http.post(
            f"{TOOLS}/notify/user:{ada.user_id}", json={"data": {"n": 1}}, headers=root.auth
        )
        assert response.status_code == 202
        frame = await events.event()
        assert frame is not None
        assert frame.event == "notification"
        assert frame.data["rawData"] == {"n": 1}
        assert frame.data["topic"] == f"user:{ada.user_id}"
        await client.http.post(
            f"{TOOLS}/track/cart.viewed",
            json={"data": {"items": 2}, "sessionId": ada.session_id},
            headers=ada.auth,
        )
        frame = await events.event()
        assert frame is not None
        assert frame.event == "cart.viewed"
        assert frame.data["rawData"]["data"] == {"items": 2}
        assert frame.data["topic"] == f"user:{ada.user_id}"
        await client.http.post(
            f"{TOOLS}/notify/session:{ada.session_id}", json={"data": 3}, headers=ada.auth
        )
        frame = await events.event()
        assert frame is not None
        assert (frame.data["topic"], frame.data["rawData"]) == (f"session:{ada.session_id}", 3)


async def test_stream_sends_heartbeats(make_client: MakeClient) -> None:
    """A silent stream sends `: heartbeat` comments every AUTHQL_SSE_HEARTBEAT_SECONDS."""
    client = tools_client(make_client, sse_heartbeat_seconds=0.05)
    ada = await sign_up(client, "ada@example.com")
    async with serving(client) as base, open_stream(base, headers=ada.auth) as events:
        await events.event()
        for _ in range(2):
            frame = await events.next(within=1.0)
            assert frame is not None
            assert frame.comment == "heartbeat"


async def test_stream_ends_at_logout_and_token_expiry(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """The stream closes when its session logs out, and when its token expires."""
    client = tools_client(make_client, sse_heartbeat_seconds=0.05)
    ada = await sign_up(client, "ada@example.com")
    async with serving(client) as base:
        async with open_stream(base, headers=ada.auth) as events:
            await events.event()
            assert (await client.http.post("/auth/logout", headers=ada.auth)).status_code == 200
            assert await events.event() is None
        again = await sign_in(client, "ada@example.com")
        async with open_stream(base, token=again.token) as events:
            await events.event()
            clock.advance(client.services.settings.access_token_ttl + 1)
            assert await events.event() is None


async def test_leaving_a_stream_unsubscribes_it(make_client: MakeClient) -> None:
    """When the client goes away its bus subscription, hub connection and slot are freed."""
    client = tools_client(make_client, sse_heartbeat_seconds=0.05)
    ada = await sign_up(client, "ada@example.com")
    services = client.services
    hub = tools.hub_for(services)
    async with serving(client) as base:
        for _ in range(2):
            async with open_stream(base, headers=ada.auth) as events:
                await events.event()
                assert services.events.subscriber_count == 1
                assert hub.connection_count == 1
            await until(lambda: services.events.subscriber_count == 0)
            await until(lambda: hub.connection_count == 0 and hub.slots.held(ada.user_id) == 0)


async def test_stream_caps_open_streams_per_user(make_client: MakeClient) -> None:
    """Past AUTHQL_WS_MAX_SUBSCRIPTIONS_PER_USER open streams a user gets 429."""
    client = tools_client(make_client, ws_max_subscriptions_per_user=1)
    ada = await sign_up(client, "ada@example.com")
    async with serving(client) as base, open_stream(base, headers=ada.auth) as events:
        await events.event()
        async with httpx.AsyncClient(base_url=base) as http:
            response = await http.get(f"{TOOLS}/stream", headers=ada.auth)
        assert response.status_code == 429
        assert response.json()["code"] == "RATE_LIMITED"


async def test_api_keys_stream_the_topics_they_ask_for(make_client: MakeClient) -> None:
    """A stream-scoped key hears any topic it names, including a user's auth events."""
    client = tools_client(make_client)
    root = await admin(client)
    ada = await sign_up(client, "ada@example.com")
    key = await api_key(client, root, "tools:stream")
    topics = f"user:{ada.user_id}"
    async with (
        serving(client) as base,
        open_stream(base, headers={"x-api-key": key}, topics=topics) as events,
    ):
        connected = await events.event()
        assert connected is not None
        assert connected.data["rawData"]["topics"] == [topics]
        await touch_profile(client, ada, "Ada")
        frame = await events.event()
        assert frame is not None
        assert frame.event == "identity.user.updated"
    reader = await api_key(client, root, "tools:track")
    response = await client.http.get(f"{TOOLS}/stream", headers=key_header(reader))
    assert response.status_code == 403


async def test_tenant_topics_are_isolated(make_client: MakeClient) -> None:
    """A member hears their tenant's topic, never an item stamped with another tenant."""
    client = tools_client(make_client)
    root = await admin(client)
    acme = await Tenant.create(slug="acme", name="Acme")
    other = await Tenant.create(slug="other", name="Other")
    ada = await sign_up(client, "ada@example.com")
    await User.filter(id=ada.user_id).update(tenant_id=acme.id)
    topic = f"tenant:{acme.id}"
    async with serving(client) as base, open_stream(base, headers=ada.auth) as events:
        connected = await events.event()
        assert connected is not None
        assert topic in connected.data["rawData"]["topics"]
        for tenant, data in ((other.id, "theirs"), (acme.id, "ours")):
            response = await client.http.post(
                f"{TOOLS}/notify/{topic}",
                json={"data": data, "tenantId": str(tenant)},
                headers=root.auth,
            )
            assert response.status_code == 202
        frame = await events.event()
        assert frame is not None
        assert (frame.data["topic"], frame.data["rawData"]) == (topic, "ours")
        assert frame.data["tenantId"] == str(acme.id)


async def test_an_admins_stream_of_others_ends_when_demoted(make_client: MakeClient) -> None:
    """An admin listening to another user's topic stops hearing it once no longer admin."""
    client = tools_client(make_client, sse_heartbeat_seconds=0.05)
    root = await admin(client)
    await create_admin(client.services.passwords, email="second@example.com", password=PASSWORD)
    second = await sign_in(client, "second@example.com")
    ada = await sign_up(client, "ada@example.com")
    topics = f"user:{ada.user_id}"
    async with serving(client) as base, open_stream(base, headers=root.auth, topics=topics) as ev:
        connected = await ev.event()
        assert connected is not None
        assert connected.data["rawData"]["topics"] == [topics]
        response = await client.http.delete(
            f"/admin/api/users/{root.user_id}/roles/admin", headers=second.auth
        )
        assert response.status_code == 200
        await touch_profile(client, ada, "Ada")
        assert await ev.event() is None


async def test_an_api_key_stream_ends_when_the_key_is_revoked(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revoking a key ends its open stream at the next re-check."""
    monkeypatch.setattr(tools, "RECHECK_SECONDS", 0.05)
    client = tools_client(make_client)
    root = await admin(client)
    raw = await api_key(client, root, "tools:stream")
    async with serving(client) as base, open_stream(base, headers={"x-api-key": raw}) as events:
        await events.event()
        keys = (await client.http.get("/admin/api/api-keys", headers=root.auth)).json()["keys"]
        await client.http.delete(f"/admin/api/api-keys/{keys[0]['id']}", headers=root.auth)
        assert await events.event() is None
