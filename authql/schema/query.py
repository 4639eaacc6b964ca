"""Query fields: each parses its arguments, calls one resolver, returns its view."""

from __future__ import annotations

import strawberry

from authql.resolvers import admin, meta, mfa, sessions
from authql.schema.types import (
    AuthProvider,
    Health,
    PageInfo,
    Session,
    SessionStatus,
    TwoFactorStatus,
    User,
    UserConnection,
    UserEdge,
)


@strawberry.type
class Query:
    @strawberry.field(description="The caller's account; null when anonymous.")
    def me(self, info: strawberry.Info) -> User | None:
        principal = info.context.principal
        return principal.user if principal else None  # type: ignore[return-value]

    @strawberry.field
    def session_status(self, info: strawberry.Info) -> SessionStatus:
        return sessions.session_status(info.context)  # type: ignore[return-value]

    @strawberry.field
    async def my_sessions(self, info: strawberry.Info) -> list[Session]:
        return await sessions.my_sessions(info.context)  # type: ignore[return-value]

    @strawberry.field(description="The caller's two-factor state.")
    async def two_factor_status(self, info: strawberry.Info) -> TwoFactorStatus:
        return await mfa.two_factor_status(info.context)  # type: ignore[return-value]

    @strawberry.field
    def auth_providers(self, info: strawberry.Info) -> list[AuthProvider]:
        return meta.auth_providers(info.context)  # type: ignore[return-value]

    @strawberry.field
    async def health(self, info: strawberry.Info) -> Health:
        return await meta.health(info.context)  # type: ignore[return-value]

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
