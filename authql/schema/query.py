"""Query fields: each parses its arguments, calls one resolver, returns its view."""

from __future__ import annotations

import strawberry

from authql.resolvers import meta, mfa, sessions
from authql.schema.types import (
    AuthProvider,
    Health,
    Session,
    SessionStatus,
    TwoFactorStatus,
    User,
)


@strawberry.type
class AccountQuery:
    """The caller's own account, sessions and server capabilities."""

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
