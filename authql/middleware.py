"""ASGI middleware that sees every request before any parsing happens: the body-size guard
and the request metrics."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from authql.services.metrics import Metrics
    from authql.settings import Settings


class _TooLarge(Exception):
    """Raised from the wrapped receive once the streamed body passes the cap."""


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, declared or streamed.

    Auth requests are small; a cap stops memory exhaustion through huge JSON documents
    before the GraphQL parser or a dialect's body parser ever sees them.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    await _refuse(send)
                    return
        if declared is not None:
            # The server frames the body by Content-Length, so a declared length under the
            # cap is the whole story: no per-message wrapping on the hot path.
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _refuse(send)


async def _refuse(send: Send) -> None:
    body = json.dumps(
        {
            "errors": [
                {"message": "Request body too large.", "extensions": {"code": "VALIDATION_ERROR"}}
            ]
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def _status_class(status: int) -> str:
    return _STATUS_CLASSES.get(status // 100, "other")


def request_surfaces(settings: Settings) -> list[tuple[str, str]]:
    """(path prefix, surface name) for every mounted REST dialect and companion router:
    requests are labelled with these names, never with their path."""
    from authql.rest_compat import COMPANION_MODULES

    table: list[tuple[str, str]] = []
    for name, prefix in settings.rest_dialects:
        table.append((prefix.rstrip("/"), name))
        for module_name, prefix_field in COMPANION_MODULES.get(name, ()):
            companion = importlib.import_module(module_name).DIALECT
            table.append((getattr(settings, prefix_field).rstrip("/"), companion.name))
    return table


class RequestMetricsMiddleware:
    """Count and time every request by surface, method and status class.

    The response is recorded when its headers leave (``http.response.start``), so a stream
    (SSE) counts once, with its time to first byte, instead of when it ends hours later. A
    websocket counts once, when its handshake is answered (accepted: ``1xx``; refused:
    ``4xx``), and is tracked in a gauge until it closes. Paths are only matched against a
    few prefixes: a raw path never becomes a label, so scanners cannot grow the series.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        surfaces: Iterable[tuple[str, str]] = (),
        graphql_path: str = "/graphql",
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.graphql_path = graphql_path
        # Longest prefix first, so /auth/admin wins over /auth.
        self.prefixes = sorted(
            ((prefix, prefix + "/", name) for prefix, name in surfaces),
            key=lambda entry: len(entry[0]),
            reverse=True,
        )

    def surface(self, path: str) -> str:
        """The surface an HTTP path belongs to."""
        if path == self.graphql_path:
            return "graphql"
        for prefix, below, name in self.prefixes:
            if path == prefix or path.startswith(below):
                return name
        return "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        if method not in _METHODS:
            method = "OTHER"
        surface = self.surface(scope["path"])
        recorded = False

        async def observed_send(message: Message) -> None:
            nonlocal recorded
            if not recorded and message["type"] == "http.response.start":
                recorded = True
                self.metrics.record_request(
                    surface, method, _status_class(message["status"]), time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception:
            if not recorded:
                self.metrics.record_request(surface, method, "5xx", time.perf_counter() - started)
            raise

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        metrics = self.metrics
        answered = False
        accepted = False

        def record(status: str) -> None:
            nonlocal answered
            answered = True
            metrics.record_request("websocket", "GET", status, time.perf_counter() - started)

        async def observed_send(message: Message) -> None:
            nonlocal accepted
            if not answered:
                kind = message["type"]
                if kind == "websocket.accept":
                    record("1xx")
                    accepted = True
                    metrics.websockets_open.inc()
                elif kind == "websocket.close":
                    record("4xx")  # closed before accepting: the server answers 403
                elif kind == "websocket.http.response.start":
                    record(_status_class(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception:
            if not answered:
                record("5xx")
            raise
        finally:
            if accepted:
                metrics.websockets_open.dec()
