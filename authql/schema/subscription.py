"""Subscription fields over graphql-transport-ws and legacy graphql-ws."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from authql.resolvers import telemetry
from authql.schema.types import AuthEvent, AuthEventType


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
