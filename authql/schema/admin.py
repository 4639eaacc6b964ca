"""Admin fields (role ``admin``): account search, sessions, the audit log, metrics, roles,
locks and session revocation.

Mixed into the root Query and Mutation types in ``authql.schema``. Every field answers
UNAUTHORIZED without a token and FORBIDDEN without the role (checked in the resolvers).
"""

from __future__ import annotations

import strawberry

from authql.resolvers import admin, metrics
from authql.schema.types import (
    AuthEventConnection,
    AuthEventEdge,
    AuthEventType,
    MetricsSnapshot,
    PageInfo,
    Session,
    User,
    UserConnection,
    UserEdge,
)


@strawberry.type
class AdminQuery:
    @strawberry.field(description="Admins: accounts, searchable and filterable by role.")
    async def users(
        self,
        info: strawberry.Info,
        search: str | None = None,
        role: str | None = None,
        first: int | None = 20,
        after: str | None = None,
    ) -> UserConnection:
        page = await admin.list_users(
            info.context,
            search=search,
            role=role,
            first=20 if first is None else first,
            after=after,
        )
        return UserConnection(
            edges=[UserEdge(cursor=cursor, node=user) for cursor, user in page.items],  # type: ignore[arg-type]
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
            total_count=page.total_count,
        )

    @strawberry.field(description="Admins: one account by id.")
    async def user(self, info: strawberry.Info, id: strawberry.ID) -> User | None:
        return await admin.get_user(info.context, user_id=str(id))  # type: ignore[return-value]

    @strawberry.field(description="Admins: an account's live sessions, newest first.")
    async def user_sessions(self, info: strawberry.Info, user_id: strawberry.ID) -> list[Session]:
        return await admin.user_sessions(info.context, user_id=str(user_id))  # type: ignore[return-value]

    @strawberry.field(description="Admins: the audit log, newest first.")
    async def audit_events(
        self,
        info: strawberry.Info,
        user_id: strawberry.ID | None = None,
        types: list[AuthEventType] | None = None,  # type: ignore[valid-type]
        first: int | None = 50,
        after: str | None = None,
    ) -> AuthEventConnection:
        page = await admin.audit_events(
            info.context,
            user_id=None if user_id is None else str(user_id),
            types=types,
            first=50 if first is None else first,
            after=after,
        )
        return AuthEventConnection(
            edges=[AuthEventEdge(cursor=cursor, node=event) for cursor, event in page.items],  # type: ignore[arg-type]
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )

    @strawberry.field(description="Admins: auth activity over the last windowSeconds.")
    async def metrics(
        self, info: strawberry.Info, window_seconds: int | None = 60
    ) -> MetricsSnapshot:
        return await metrics.snapshot(  # type: ignore[return-value]
            info.context, window_seconds=60 if window_seconds is None else window_seconds
        )


@strawberry.type
class AdminMutation:
    """Admin mutations (roles, locks, session revocation)."""

    @strawberry.mutation(description="Admins: replace an account's roles.")
    async def set_user_roles(
        self, info: strawberry.Info, user_id: strawberry.ID, roles: list[str]
    ) -> User:
        return await admin.set_user_roles(info.context, user_id=str(user_id), roles=roles)  # type: ignore[return-value]

    @strawberry.mutation(
        description="Admins: refuse an account's sign-ins for `minutes` (omitted: until "
        "unlocked) and end its sessions now."
    )
    async def lock_user(
        self, info: strawberry.Info, user_id: strawberry.ID, minutes: int | None = None
    ) -> User:
        return await admin.lock_user(info.context, user_id=str(user_id), minutes=minutes)  # type: ignore[return-value]

    @strawberry.mutation(description="Admins: lift a lock and forget failed sign-ins.")
    async def unlock_user(self, info: strawberry.Info, user_id: strawberry.ID) -> User:
        return await admin.unlock_user(info.context, user_id=str(user_id))  # type: ignore[return-value]

    @strawberry.mutation(description="Admins: end every session of an account; how many.")
    async def revoke_user_sessions(self, info: strawberry.Info, user_id: strawberry.ID) -> int:
        return await admin.revoke_user_sessions(info.context, user_id=str(user_id))
