"""``/metrics`` as a Prometheus scraper sees it: off without a token, guarded by it, and
counters that move with real traffic on every surface."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, WebSocketUpgradeError, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from authql.middleware import RequestMetricsMiddleware
from authql.services.events import AuthEvent, AuthEventType, EventBus
from authql.services.metrics import Metrics
from authql.services.ratelimit import MemoryRateLimiter
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]
TOKEN = "scrape-token-" + "s" * 24
WRONG = "wrong password!"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: GraphQLClient) -> Samples:
    response = await client.http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return parse(response.text)


# --- access -------------------------------------------------------------------------------------


async def test_metrics_are_off_without_a_token(client: GraphQLClient) -> None:
    """With no metrics token configured, /metrics does not exist (404) whatever is sent."""
    assert (await client.http.get("/metrics")).status_code == 404
    response = await client.http.get("/metrics", headers={"authorization": "Bearer "})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"authorization": "Bearer wrong"}, id="wrong-token"),
        pytest.param({"authorization": f"Bearer {TOKEN}x"}, id="longer-token"),
        pytest.param({"authorization": f"Bearer {TOKEN[:-1]}"}, id="prefix-of-token"),
        pytest.param({"authorization": f"Basic {TOKEN}"}, id="other-scheme"),
        pytest.param({"authorization": TOKEN}, id="no-scheme"),
    ],
)
async def test_metrics_refuse_a_wrong_token(
    make_client: MakeClient, headers: dict[str, str]
) -> None:
    """Anything but the configured bearer token is 401 with a Bearer challenge and no numbers."""
    client = make_client(metrics_token=TOKEN)
    response = await client.http.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "authql_" not in response.text


async def test_metrics_answer_the_right_token_in_prometheus_text(make_client: MakeClient) -> None:
    """The configured token gets 200 in text format 0.0.4 with every metric family declared."""
    client = make_client(metrics_token=TOKEN)
    response = await client.http.get("/metrics", headers={"authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "authql_auth_events",
        "authql_requests",
        "authql_request_duration_seconds",
        "authql_websocket_connections",
        "authql_active_sessions",
        "authql_subscriptions_open",
        "authql_event_bus_dropped",
        "authql_rate_limit_decisions",
        "authql_webhook_attempts",
        "authql_webhook_deliveries",
    } <= families
    samples = parse(response.text)
    for outcome in ("succeeded", "failed"):
        assert ("authql_webhook_deliveries_total", frozenset({("outcome", outcome)})) in samples


# --- counters that move -------------------------------------------------------------------------


async def test_counters_follow_sign_ins_rest_calls_and_rate_limits(
    make_client: MakeClient,
) -> None:
    """GraphQL logins (good, bad, rate-limited) and a REST dialect call each move the counters
    an operator would chart, and active sessions come from the database."""
    client = make_client(
        metrics_token=TOKEN,
        rest_dialects=(("node-auth", "/auth"),),
        rate_limits={"login": (2, 900)},
    )
    before = await scrape(client)
    await client.register("ada@example.com")
    assert (await client.login()).data["login"]["status"] == "OK"  # resets the login budget
    for _ in range(2):
        assert (await client.login("ada@example.com", WRONG)).error_code == "INVALID_CREDENTIALS"
    assert (await client.login()).error_code == "RATE_LIMITED"
    rest = await client.http.post(
        "/auth/login", json={"email": "bob@example.com", "password": PASSWORD}
    )
    assert rest.status_code == 401
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    events = "authql_auth_events_total"
    assert delta(events, type="REGISTERED", success="true") == 1
    assert delta(events, type="LOGIN_SUCCEEDED", success="true") == 2  # register signs in too
    assert delta(events, type="LOGIN_FAILED", success="false") == 3
    assert delta(events, type="RATE_LIMITED", success="false") == 1
    requests = "authql_requests_total"
    assert delta(requests, surface="graphql", method="POST", status="2xx") == 5
    assert delta(requests, surface="node-auth", method="POST", status="4xx") == 1
    assert delta(requests, surface="other", method="GET", status="2xx") == 1  # the first scrape
    latency = "authql_request_duration_seconds_count"
    assert delta(latency, surface="graphql", method="POST") == 5
    decisions = "authql_rate_limit_decisions_total"
    assert delta(decisions, action="login", decision="allowed") == 4  # three GraphQL, one REST
    assert delta(decisions, action="login", decision="denied") == 1
    assert value(after, "authql_active_sessions") == 2


async def test_active_sessions_gauge_is_read_at_scrape_time(
    make_client: MakeClient,
) -> None:
    """The active-session gauge drops as soon as a session is logged out, without waiting
    for any event."""
    client = make_client(metrics_token=TOKEN)
    payload = await client.register("ada@example.com")
    await client.login()
    assert value(await scrape(client), "authql_active_sessions") == 2
    await client.gql("mutation { logout }", token=payload["accessToken"])
    assert value(await scrape(client), "authql_active_sessions") == 1


async def test_request_labels_never_carry_raw_paths_or_methods(make_client: MakeClient) -> None:
    """Unknown paths and odd methods are counted under fixed labels, so a scanner cannot
    create new series; a path under a dialect's prefix counts for that dialect only."""
    client = make_client(metrics_token=TOKEN, rest_dialects=(("node-auth", "/auth"),))
    before = await scrape(client)
    probes = [str(uuid.uuid4()) for _ in range(3)]
    for probe in probes:
        await client.http.get(f"/{probe}")
        await client.http.get(f"/auth/{probe}")
        await client.http.get(f"/authx/{probe}")
        await client.http.get(f"/tools/{probe}")
    await client.http.request("BREW", "/graphql")
    response = await client.http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    for probe in probes:
        assert probe not in response.text
    after = parse(response.text)
    requests = "authql_requests_total"
    gained = value(after, requests, surface="other", method="GET", status="4xx") - value(
        before, requests, surface="other", method="GET", status="4xx"
    )
    assert gained == 6  # "/<probe>" and "/authx/<probe>" belong to no surface
    assert value(after, requests, surface="node-auth", method="GET", status="4xx") == 3
    assert value(after, requests, surface="node-auth-tools", method="GET", status="4xx") == 3
    assert value(after, requests, surface="graphql", method="OTHER", status="4xx") == 1


async def test_oversized_bodies_are_counted_too(make_client: MakeClient) -> None:
    """A request refused by the body-size guard (413) still shows in the request counter."""
    client = make_client(metrics_token=TOKEN, max_body_bytes=100)
    response = await client.http.post("/graphql", content=b"{" + b" " * 200 + b"}")
    assert response.status_code == 413
    samples = await scrape(client)
    assert value(samples, "authql_requests_total", surface="graphql", method="POST", status="4xx")


# --- websockets ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def graphql_socket(
    app: Starlette, headers: dict[str, str] | None = None
) -> AsyncIterator[AsyncWebSocketSession]:
    async with (
        httpx.AsyncClient(
            transport=ASGIWebSocketTransport(app), base_url="http://testserver"
        ) as http,
        aconnect_ws(
            "/graphql",
            http,
            subprotocols=["graphql-transport-ws"],
            headers=headers or {},
            keepalive_ping_interval_seconds=None,
        ) as ws,
    ):
        yield ws


async def eventually(check: Callable[[], Any], within: float = 5.0) -> None:
    """Poll ``check`` until it is true (the server side of a socket runs in its own task)."""
    step = 0.005
    for _ in range(int(within / step)):
        if await check():
            return
        await asyncio.sleep(step)
    pytest.fail("condition not reached")


async def test_websockets_count_once_and_subscriptions_are_gauged(
    make_client: MakeClient,
) -> None:
    """A websocket counts as one request when it connects, and the open-connection and
    open-subscription gauges rise while it listens and fall when it closes."""
    client = make_client(metrics_token=TOKEN)
    payload = await client.register("ada@example.com")
    async with graphql_socket(client.app) as ws:
        await ws.send_json(
            {
                "type": "connection_init",
                "payload": {"authorization": f"Bearer {payload['accessToken']}"},
            }
        )
        assert (await asyncio.wait_for(ws.receive_json(), 5))["type"] == "connection_ack"
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": "subscription { authEvents { type } }"},
            }
        )

        async def subscribed() -> bool:
            return value(await scrape(client), "authql_subscriptions_open") == 1

        await eventually(subscribed)
        samples = await scrape(client)
        assert value(samples, "authql_websocket_connections") == 1
        websocket = {"surface": "websocket", "method": "GET"}
        assert value(samples, "authql_requests_total", status="1xx", **websocket) == 1
        await client.login()  # traffic on the socket adds no requests
        await asyncio.wait_for(ws.receive_json(), 5)

    async def closed() -> bool:
        samples = await scrape(client)
        return (
            value(samples, "authql_websocket_connections") == 0
            and value(samples, "authql_subscriptions_open") == 0
        )

    await eventually(closed)
    samples = await scrape(client)
    assert value(samples, "authql_requests_total", status="1xx", **websocket) == 1


async def test_refused_websocket_handshakes_count_as_client_errors(
    make_client: MakeClient,
) -> None:
    """A cross-origin handshake the server refuses counts under status 4xx and never as open."""
    client = make_client(metrics_token=TOKEN, cors_origins=("https://app.example",))
    refused: BaseException | None = None
    try:
        async with graphql_socket(client.app, {"origin": "https://evil.example"}):
            pass
    except BaseExceptionGroup as group:  # anyio wraps what the transport raised
        refused = group
        while isinstance(refused, BaseExceptionGroup) and len(refused.exceptions) == 1:
            refused = refused.exceptions[0]
    except (WebSocketDisconnect, WebSocketUpgradeError) as error:
        refused = error
    assert isinstance(refused, WebSocketDisconnect | WebSocketUpgradeError)
    samples = await scrape(client)
    labels = {"surface": "websocket", "method": "GET"}
    assert value(samples, "authql_requests_total", status="4xx", **labels) == 1
    assert value(samples, "authql_requests_total", status="1xx", **labels) == 0
    assert value(samples, "authql_websocket_connections") == 0


# --- the middleware alone -----------------------------------------------------------------------


async def test_streams_are_recorded_when_their_headers_leave() -> None:
    """A never-ending stream (SSE) is counted, once, as soon as its response starts."""
    metrics = Metrics()
    forever = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        yield b"data: hello\n\n"
        await forever.wait()

    async def stream(_: Any) -> StreamingResponse:
        return StreamingResponse(events(), media_type="text/event-stream")

    app = RequestMetricsMiddleware(
        Starlette(routes=[Route("/tools/events", stream)]),
        metrics,
        surfaces=[("/tools", "node-auth-tools")],
    )
    counted_at_start: list[float] = []
    first_chunk = asyncio.Event()
    labels = ("node-auth-tools", "GET", "2xx")

    async def receive() -> Message:
        await forever.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            counted_at_start.append(metrics.request_count(*labels))
        elif message.get("body"):
            first_chunk.set()

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": "/tools/events",
        "raw_path": b"/tools/events",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
    }
    task = asyncio.create_task(app(scope, receive, send))
    await asyncio.wait_for(first_chunk.wait(), 5)
    assert counted_at_start == [1]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert metrics.request_count(*labels) == 1


async def test_a_crashing_app_is_counted_as_a_server_error() -> None:
    """An exception before any response counts as 5xx and still reaches the server."""
    metrics = Metrics()

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    app = RequestMetricsMiddleware(broken, metrics)
    scope: Scope = {"type": "http", "method": "POST", "path": "/graphql"}

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent")

    with pytest.raises(RuntimeError):
        await app(scope, receive, send)
    assert metrics.request_count("graphql", "POST", "5xx") == 1


def test_surfaces_prefer_the_longest_prefix() -> None:
    """A router mounted under a dialect's prefix gets its own label; look-alike paths none."""
    middleware = RequestMetricsMiddleware(
        Starlette(),
        Metrics(),
        surfaces=[("/auth", "node-auth"), ("/auth/admin", "node-auth-admin"), ("/api/auth", "b")],
    )
    assert middleware.surface("/auth/admin/api/users") == "node-auth-admin"
    assert middleware.surface("/auth/admin") == "node-auth-admin"
    assert middleware.surface("/auth/administrator") == "node-auth"
    assert middleware.surface("/auth") == "node-auth"
    assert middleware.surface("/authentic") == "other"
    assert middleware.surface("/api/auth/session") == "b"
    assert middleware.surface("/graphql") == "graphql"
    assert middleware.surface("/graphql/x") == "other"


# --- the registry alone -------------------------------------------------------------------------


def test_webhook_counters_take_only_known_outcomes() -> None:
    """The webhook worker's attempts and final outcomes are counted; an unknown outcome is a
    programming error, not a new series."""
    metrics = Metrics()
    metrics.record_webhook_attempt(False)
    metrics.record_webhook_attempt(True)
    metrics.record_webhook_attempt(True)
    metrics.record_webhook_delivery("succeeded")
    metrics.record_webhook_delivery("failed")
    metrics.record_webhook_delivery("failed")
    with pytest.raises(ValueError):
        metrics.record_webhook_delivery("exploded")
    samples = parse(metrics.render().decode())
    assert value(samples, "authql_webhook_attempts_total", outcome="success") == 2
    assert value(samples, "authql_webhook_attempts_total", outcome="failure") == 1
    assert value(samples, "authql_webhook_deliveries_total", outcome="succeeded") == 1
    assert value(samples, "authql_webhook_deliveries_total", outcome="failed") == 2
    assert "exploded" not in metrics.render().decode()


async def test_events_dropped_by_slow_subscribers_are_counted() -> None:
    """Events a full subscriber queue had to drop show in the dropped counter."""
    metrics = Metrics()
    bus = EventBus(queue_size=1)
    metrics.bind(limiter=object(), events=bus)
    metrics.bind(limiter=object(), events=bus)  # binding twice changes nothing
    event = AuthEvent(type=AuthEventType.LOGOUT, at=dt.datetime.now(dt.UTC))
    async with bus.subscribe():
        for _ in range(4):
            bus.deliver(event)
        samples = parse(metrics.render().decode())
        assert value(samples, "authql_event_bus_dropped_total") == 3
        assert value(samples, "authql_subscriptions_open") == 1


def test_rate_limit_observer_leaves_decisions_unchanged() -> None:
    """Watching the limiter counts its decisions per action without changing any of them."""
    now = [1_000.0]
    watched = MemoryRateLimiter({"login": (2, 60)}, clock=lambda: now[0])
    plain = MemoryRateLimiter({"login": (2, 60)}, clock=lambda: now[0])
    metrics = Metrics()
    metrics.bind(limiter=watched, events=EventBus())
    answers = []
    for step in range(6):
        now[0] += 15 * step
        answers.append((watched.hit("login", "ada"), plain.hit("login", "ada")))
        assert watched.hit("unlimited", "ada") is None
    assert all(left == right for left, right in answers)
    denied = sum(1 for left, _ in answers if left is not None)
    assert denied > 0
    samples = parse(metrics.render().decode())
    decisions = "authql_rate_limit_decisions_total"
    assert value(samples, decisions, action="login", decision="denied") == denied
    assert value(samples, decisions, action="login", decision="allowed") == 6 - denied
    assert not any(labels and ("action", "unlimited") in labels for _, labels in samples)
