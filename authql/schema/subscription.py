"""Subscription fields over graphql-transport-ws and legacy graphql-ws."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator

import strawberry
from strawberry.scalars import JSON

from authql.resolvers import telemetry
from authql.services.events import AuthEventType as _AuthEventType

AuthEventType = strawberry.enum(_AuthEventType, name="AuthEventType")


@strawberry.type(description="Something that happened; detail never holds a secret.")
class AuthEvent:
    id: strawberry.ID
    type: AuthEventType  # type: ignore[valid-type]
    at: dt.datetime
    user_id: strawberry.ID | None
    session_id: strawberry.ID | None
    ip_address: str | None
    user_agent: str | None
    success: bool
    detail: JSON | None  # type: ignore[valid-type]


@strawberry.type
class Subscription:
    @strawberry.subscription(description="Admins: every user's events; others: their own.")
    async def auth_events(
        self,
        info: strawberry.Info,
        types: list[AuthEventType] | None = None,  # type: ignore[valid-type]
        user_id: strawberry.ID | None = None,
    ) -> AsyncGenerator[AuthEvent, None]:
        async for event in telemetry.auth_events(
            info.context, types=types, user_id=str(user_id) if user_id else None
        ):
            yield event  # type: ignore[misc]
