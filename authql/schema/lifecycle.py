"""Account lifecycle fields: deletion, restore, cleanup.

Mixed into the root Query and Mutation types in ``authql.schema``.
"""

from __future__ import annotations

import strawberry

from authql.resolvers import admin


@strawberry.type
class LifecycleMutation:
    """Deleting, restoring and purging accounts; cleaning up what has expired."""

    @strawberry.mutation(description="Admins: delete expired and revoked sessions.")
    async def cleanup_sessions(self, info: strawberry.Info) -> int:
        return await admin.cleanup_sessions(info.context)
