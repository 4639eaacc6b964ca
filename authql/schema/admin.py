"""Admin fields (role ``admin``): account search, sessions, the audit log and metrics.

Mixed into the root Query and Mutation types in ``authql.schema``.
"""

from __future__ import annotations

import strawberry

from authql.resolvers import admin
from authql.schema.types import PageInfo, User, UserConnection, UserEdge


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


@strawberry.type
class AdminMutation:
    """Admin mutations (roles, locks, session revocation)."""
