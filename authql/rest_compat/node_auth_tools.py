"""node-auth's tools router (mounted beside the node-auth dialect at AUTHQL_TOOLS_PREFIX).

See DIALECTS.md section (b2).
"""

from __future__ import annotations

from typing import Any

from authql.errors import AuthError
from authql.rest_compat._base import Dialect, Endpoint


class NodeAuthToolsRouter(Dialect):
    name = "node-auth-tools"
    title = "awesome-node-auth tools router"

    def endpoints(self) -> list[Endpoint]:
        return []

    def render_error(self, error: AuthError) -> tuple[int, dict[str, Any]]:
        return 400, {"error": error.message, "code": error.code.value}


DIALECT = NodeAuthToolsRouter
