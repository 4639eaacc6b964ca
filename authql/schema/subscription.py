"""Subscription fields over graphql-transport-ws and legacy graphql-ws.

Each field hands its stream to one resolver with two transport hooks from the context: the
per-user subscription slots and ``end_streams``, which the websocket view turns into a
4401 / 4403 close once the resolver reports that its caller signed out or lost the right
to listen.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import strawberry

from authql.resolvers import telemetry
from authql.schema.types import AuthEvent, AuthEventType, MetricsSnapshot, SessionEvent


def _hooks(info: strawberry.Info) -> dict[str, Any]:
    context = info.context
    return {
        "on_end": getattr(context, "end_streams", None),
        "slots": getattr(context, "subscription_slots", None),
    }


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
            info.context,
            types=types,
            user_id=str(user_id) if user_id else None,
            **_hooks(info),
        ):
            yield event  # type: ignore[misc]

    @strawberry.subscription(
        description="Your own sessions as they are created, refreshed and revoked (CREATED | "
        "REFRESHED | REVOKED); after your current session is revoked the stream ends."
    )
    async def session_events(self, info: strawberry.Info) -> AsyncGenerator[SessionEvent, None]:
        async for change in telemetry.session_events(info.context, **_hooks(info)):
            yield change  # type: ignore[misc]

    @strawberry.subscription(
        description="Admins: a snapshot of the last intervalSeconds (1-3600), at once and "
        "then every intervalSeconds."
    )
    async def metrics(
        self, info: strawberry.Info, interval_seconds: int | None = 5
    ) -> AsyncGenerator[MetricsSnapshot, None]:
        interval = 5 if interval_seconds is None else interval_seconds
        async for snapshot in telemetry.metrics(
            info.context, interval_seconds=interval, **_hooks(info)
        ):
            yield snapshot  # type: ignore[misc]
