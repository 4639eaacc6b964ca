"""The Strawberry ASGI view: one instance serves /graphql over HTTP and websockets.

``get_context`` builds the shared RequestContext from the Authorization header; for a
websocket it runs once per connection and ``on_ws_connect`` then authenticates from the
``connection_init`` payload (``{"authorization": "Bearer ..."}``), refusing the connection
when a credential is present but not valid.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.extensions import SchemaExtension

from authql.context import RequestContext, authenticate, bearer_token, build_context
from authql.services import Services


@dataclass
class GraphQLContext(RequestContext):
    """RequestContext plus what Strawberry hands the view."""

    request: Request | WebSocket | None = None
    response: Response | WebSocket | None = None
    connection_params: dict[str, Any] | None = None
    #: The access token a websocket authenticated with; re-checked before each operation so
    #: a long-lived socket never outlives its session.
    socket_token: str | None = None


class AuthqlGraphQL(GraphQL):  # type: ignore[type-arg]
    """Strawberry's ASGI app with authql's context and websocket authentication."""

    def __init__(self, schema: Any, services: Services, **options: Any) -> None:
        super().__init__(schema, **options)
        self.services = services

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
        )
        if isinstance(request, WebSocket):
            context.socket_token = token
        return context

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
        context.socket_token = token
        return None


class RecheckSocketPrincipal(SchemaExtension):
    """Before each operation on a websocket, re-authenticate its token: a logout elsewhere
    turns the socket anonymous for every later query, as it would over HTTP."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        token = getattr(context, "socket_token", None)
        if token is not None:
            await authenticate(context, token)
        yield
