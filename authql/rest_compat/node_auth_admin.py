"""node-auth's admin router (mounted beside the node-auth dialect at AUTHQL_ADMIN_PREFIX).

See DIALECTS.md section (b3).
"""

from __future__ import annotations

from typing import Any

from authql.errors import AuthError
from authql.rest_compat._base import Dialect, Endpoint


class NodeAuthAdminRouter(Dialect):
    name = "node-auth-admin"
    title = "awesome-node-auth admin router"

    def endpoints(self) -> list[Endpoint]:
        return []

    def render_error(self, error: AuthError) -> tuple[int, dict[str, Any]]:
        return 400, {"error": error.message, "code": error.code.value}


DIALECT = NodeAuthAdminRouter
