"""REST compatibility dialects: other auth products' paths and shapes over authql's resolvers.

Each dialect module contributes a factory returning Starlette routes for a prefix; this
package resolves ``AUTHQL_REST_DIALECTS`` into routes and refuses two dialects that would
claim the same method and path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.routing import BaseRoute, Route

from authql.services import Services
from authql.settings import ConfigError

logger = logging.getLogger("authql.rest_compat")

DialectFactory = Callable[[Services, str], list[BaseRoute]]

#: dialect name -> factory. Filled in as dialects are implemented.
DIALECTS: dict[str, DialectFactory] = {}

KNOWN_NAMES = ("node-auth", "fluxkit", "authcore", "modularauth", "browsary")


def dialect_routes(services: Services) -> list[BaseRoute]:
    """Routes of every configured dialect; ConfigError on unknown names or path clashes."""
    routes: list[BaseRoute] = []
    claimed: dict[tuple[str, str], str] = {}
    for name, prefix in services.settings.rest_dialects:
        if name not in KNOWN_NAMES:
            raise ConfigError(
                f"AUTHQL_REST_DIALECTS: unknown dialect {name!r} (known: {', '.join(KNOWN_NAMES)})"
            )
        factory = DIALECTS.get(name)
        if factory is None:
            logger.warning("REST dialect %s is not available in this version; not mounted", name)
            continue
        for route in factory(services, prefix):
            if isinstance(route, Route):
                for method in sorted(route.methods or ()):
                    key = (method, route.path)
                    if key in claimed:
                        raise ConfigError(
                            f"AUTHQL_REST_DIALECTS: {name} and {claimed[key]} both claim "
                            f"{method} {route.path}; mount one at another prefix"
                        )
                    claimed[key] = name
            routes.append(route)
    return routes
