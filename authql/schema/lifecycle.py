"""Account lifecycle fields: deletion, restore, cleanup.

Mixed into the root Query and Mutation types in ``authql.schema``.
"""

from __future__ import annotations

import strawberry

from authql.resolvers import cleanup, lifecycle
from authql.schema.types import AuthPayload


@strawberry.type
class LifecycleMutation:
    """Deleting, restoring and purging accounts; cleaning up what has expired."""

    @strawberry.mutation(
        description="Delete the caller's account (restorable for the retention period). "
        "Needs the password if the account has one and a current code if 2FA is on."
    )
    async def delete_account(
        self, info: strawberry.Info, password: str | None = None, code: str | None = None
    ) -> bool:
        return await lifecycle.delete_account(info.context, password=password, code=code)

    @strawberry.mutation(
        description="Mail a restore link if a deleted, restorable account has this email. "
        "Always true."
    )
    async def request_account_restore(self, info: strawberry.Info, email: str) -> bool:
        return await lifecycle.request_account_restore(info.context, email=email)

    @strawberry.mutation(description="Restore a deleted account from an emailed link; signs in.")
    async def restore_account(self, info: strawberry.Info, token: str) -> AuthPayload:
        return await lifecycle.restore_account(info.context, token=token)  # type: ignore[return-value]

    @strawberry.mutation(description="Admins: delete an account, restorably unless hard.")
    async def delete_user(
        self, info: strawberry.Info, user_id: strawberry.ID, hard: bool | None = False
    ) -> bool:
        return await lifecycle.delete_user(info.context, user_id=str(user_id), hard=bool(hard))

    @strawberry.mutation(
        description="Admins: delete expired and revoked sessions, spent tokens, challenges "
        "and sign-in states, and purge accounts past retention; returns how many."
    )
    async def cleanup_sessions(self, info: strawberry.Info) -> int:
        return await cleanup.cleanup(info.context)
