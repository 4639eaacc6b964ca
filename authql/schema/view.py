"""The Strawberry ASGI view: one instance serves /graphql over HTTP and websockets.

``get_context`` builds the shared RequestContext from the Authorization header; for a
websocket it runs once per connection, before ``connection_init``. A websocket may
authenticate, in this order of preference, with the ``connection_init`` payload
(``{"authorization": "Bearer ..."}``), the handshake's Authorization header, or a sign-in
cookie of a mounted REST dialect (see ``cookie_credentials``). A payload or header
credential that is not valid refuses the connection; a cookie that is not valid is ignored
(cookies are ambient and generic names like ``token`` may belong to another app on the host).
Browsers cannot set headers on a websocket handshake, so cookies are what lets a same-origin
page subscribe; the view's origin check (``allowed_origins``) keeps other sites' pages from
riding on them.

Both protocol handlers are subclassed to finish what a stream's resolver reports: when a
subscription ends because its caller signed out (token expired, session revoked) or lost
the right to listen, the operation completes and the whole connection is then closed with
4401 (Unauthorized) or 4403 (Forbidden), ending every other operation on it. Operations
over the per-connection cap get an error with ``extensions.code = RATE_LIMITED``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.extensions import SchemaExtension
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from authql.context import (
    RequestContext,
    authenticate,
    authenticate_session_token,
    bearer_token,
    build_context,
)
from authql.errors import ErrorCode
from authql.resolvers.telemetry import StreamEnd, SubscriptionSlots
from authql.services import Services
from authql.settings import Settings

#: How a connection closes after a stream ended for one of these reasons.
CLOSE_CODES: dict[StreamEnd, tuple[int, str]] = {
    StreamEnd.SIGNED_OUT: (4401, "Unauthorized"),
    StreamEnd.FORBIDDEN: (4403, "Forbidden"),
}

CONNECTION_CAP_MESSAGE = "Too many operations on this connection."

ACCESS_TOKEN = "access_token"
SESSION_TOKEN = "session_token"


def cookie_credentials(settings: Settings, cookies: Mapping[str, str]) -> list[tuple[str, str]]:
    """The (kind, token) sign-in cookies present, for the REST dialects that are mounted.

    The names are the dialects' own: node-auth's ``accessToken`` (``__Host-accessToken``
    when the public URL is https, and then only that, as node-auth reads it) and Browsary's
    ``token`` carry an access JWT; ModularAuth's ``sid`` and AuthCore's
    ``authcore.session-token`` (``__Secure-`` prefixed under https) an opaque session token.
    """
    mounted = {name for name, _ in settings.rest_dialects}
    secure = settings.secure_cookies
    names: list[tuple[str, str, str]] = [
        ("node-auth", ACCESS_TOKEN, "__Host-accessToken" if secure else "accessToken"),
        ("browsary", ACCESS_TOKEN, "token"),
        ("modularauth", SESSION_TOKEN, "sid"),
        (
            "authcore",
            SESSION_TOKEN,
            "__Secure-authcore.session-token" if secure else "authcore.session-token",
        ),
    ]
    found: list[tuple[str, str]] = []
    for dialect, kind, name in names:
        value = cookies.get(name)
        if dialect in mounted and value:
            found.append((kind, value))
    return found


@dataclass
class GraphQLContext(RequestContext):
    """RequestContext plus what Strawberry hands the view and the socket's bookkeeping."""

    request: Request | WebSocket | None = None
    response: Response | WebSocket | None = None
    connection_params: dict[str, Any] | None = None
    #: The credential a websocket authenticated with (an access token, or an opaque session
    #: token from a cookie); re-checked before each operation so a long-lived socket never
    #: outlives its session.
    socket_token: str | None = None
    socket_token_kind: str = ACCESS_TOKEN
    #: Per-user stream slots shared by every connection of this app.
    subscription_slots: SubscriptionSlots | None = None
    #: Set when a stream ended because its caller may no longer listen; the websocket
    #: handler then closes the connection.
    ended: StreamEnd | None = None

    def end_streams(self, reason: StreamEnd) -> None:
        """Ask the transport to end the connection (signing out outranks a refusal)."""
        if self.ended is None or reason is StreamEnd.SIGNED_OUT:
            self.ended = reason

    async def reauthenticate(self) -> bool:
        """Re-check the socket's credential; False (and anonymous) when it no longer holds."""
        if self.socket_token is None:
            return True
        if self.socket_token_kind == SESSION_TOKEN:
            return await authenticate_session_token(self, self.socket_token)
        return await authenticate(self, self.socket_token)


_CLOSE_ERRORS = (RuntimeError, OSError, WebSocketDisconnect, WebSocketDisconnected)


async def _send_unless_closed(
    handler: AuthqlTransportWSHandler | AuthqlLegacyWSHandler,
    send: Callable[[Any], Awaitable[None]],
    message: Any,
) -> None:
    """Send, unless the connection was closed; a client that vanished mid-send is not an
    error (its receive loop ends and cancels every operation), so nothing is logged."""
    if handler.closed:
        return
    try:
        await send(message)
    except WebSocketDisconnected:
        handler.closed = True


class AuthqlTransportWSHandler(BaseGraphQLTransportWSHandler):  # type: ignore[type-arg]
    """graphql-transport-ws with coded cap errors and close-on-sign-out."""

    closed = False

    async def handle_subscribe(self, message: Any) -> None:
        cap = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and cap is not None
            and message.get("id") not in self.operations
            and len(self.operations) >= cap
        ):
            await self.send_message(
                {
                    "id": message["id"],
                    "type": "error",
                    "payload": [
                        {
                            "message": CONNECTION_CAP_MESSAGE,
                            "extensions": {"code": ErrorCode.RATE_LIMITED.value},
                        }
                    ],
                }
            )
            return
        await super().handle_subscribe(message)

    async def run_operation(self, operation: Operation) -> None:  # type: ignore[type-arg]
        await super().run_operation(operation)
        await self.close_if_ended()

    async def close_if_ended(self) -> None:
        """After an operation completed: close the connection if its stream asked to."""
        reason = getattr(self.context, "ended", None)
        if reason is None or self.closed:
            return
        self.closed = True
        code, text = CLOSE_CODES[reason]
        with contextlib.suppress(*_CLOSE_ERRORS):
            await self.websocket.close(code, text)
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)

    async def send_message(self, message: Any) -> None:
        await _send_unless_closed(self, super().send_message, message)


class AuthqlLegacyWSHandler(BaseGraphQLWSHandler):  # type: ignore[type-arg]
    """Legacy graphql-ws with the same cap errors and close-on-sign-out. (Strawberry refuses
    ``start`` before ``connection_ack`` with 4401, so ``on_ws_connect`` always runs first.)"""

    closed = False

    async def handle_start(self, message: Any) -> None:
        cap = self.max_subscriptions_per_connection
        others = set(self.tasks) - {message.get("id")}
        if self.connection_acknowledged and cap is not None and len(others) >= cap:
            await self.send_message(
                {
                    "type": "error",
                    "id": message["id"],
                    "payload": {
                        "message": CONNECTION_CAP_MESSAGE,
                        "extensions": {"code": ErrorCode.RATE_LIMITED.value},
                    },
                }
            )
            return
        await super().handle_start(message)

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        await super().handle_async_results(operation_id, query, operation_name, variables)
        await self.close_if_ended()

    async def close_if_ended(self) -> None:
        """After an operation completed: close the connection if its stream asked to."""
        reason = getattr(self.context, "ended", None)
        if reason is None or self.closed:
            return
        self.closed = True
        code, text = CLOSE_CODES[reason]
        with contextlib.suppress(*_CLOSE_ERRORS):
            await self.websocket.close(code, text)
        await self.cleanup()

    async def send_message(self, message: Any) -> None:
        await _send_unless_closed(self, super().send_message, message)


class AuthqlGraphQL(GraphQL):  # type: ignore[type-arg]
    """Strawberry's ASGI app with authql's context and websocket authentication.

    ``max_subscriptions_per_user`` caps live subscriptions per account across all of its
    sockets in this process (RATE_LIMITED past it).
    """

    graphql_transport_ws_handler_class = AuthqlTransportWSHandler
    graphql_ws_handler_class = AuthqlLegacyWSHandler

    def __init__(
        self,
        schema: Any,
        services: Services,
        *,
        max_subscriptions_per_user: int = 50,
        **options: Any,
    ) -> None:
        super().__init__(schema, **options)
        self.services = services
        self.subscription_slots = SubscriptionSlots(max_subscriptions_per_user)

    async def get_context(  # type: ignore[override]
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> GraphQLContext:
        headers = request.headers
        token = bearer_token(headers.get("authorization"))
        context = await build_context(
            self.services,
            peer=request.client.host if request.client else None,
            forwarded_for=headers.get("x-forwarded-for"),
            user_agent=headers.get("user-agent"),
            access_token=token,
            context_class=GraphQLContext,
            request=request,
            response=response,
            subscription_slots=self.subscription_slots,
        )
        if isinstance(request, WebSocket):
            if token is not None:
                context.socket_token = token
            else:
                await self._authenticate_with_cookies(context, request)
        return context

    async def _authenticate_with_cookies(self, context: GraphQLContext, socket: WebSocket) -> None:
        """The first sign-in cookie that holds authenticates the socket; others are ignored."""
        for kind, token in cookie_credentials(self.services.settings, socket.cookies):
            context.socket_token, context.socket_token_kind = token, kind
            if await context.reauthenticate():
                return
        context.socket_token, context.socket_token_kind = None, ACCESS_TOKEN
        context.principal, context.credential_rejected = None, False

    async def on_ws_connect(self, context: GraphQLContext) -> dict[str, object] | None:  # type: ignore[override]
        params = context.connection_params or {}
        if not isinstance(params, dict):
            raise ConnectionRejectionError({"code": "VALIDATION_ERROR"})
        raw = params.get("authorization") or params.get("Authorization")
        if raw is None:
            if context.credential_rejected:
                raise ConnectionRejectionError({"code": "UNAUTHORIZED"})
            return None
        token = bearer_token(str(raw))
        if token is None or not await authenticate(context, token):
            raise ConnectionRejectionError({"code": "UNAUTHORIZED"})
        context.socket_token, context.socket_token_kind = token, ACCESS_TOKEN
        return None


class RecheckSocketPrincipal(SchemaExtension):
    """Before each operation on a websocket, re-authenticate its credential: a logout
    elsewhere turns the socket anonymous for the operation, which then answers
    UNAUTHORIZED, after which the connection closes (4401) as a running stream's would."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        socket = isinstance(context, GraphQLContext) and context.socket_token is not None
        if socket and not await context.reauthenticate():
            context.end_streams(StreamEnd.SIGNED_OUT)
        yield
