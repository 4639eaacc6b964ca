"""REST compatibility dialects: other auth products' paths and shapes over authql's resolvers.

Each dialect module defines one ``Dialect`` subclass named ``DIALECT`` (see ``_base``).
This package resolves ``AUTHQL_REST_DIALECTS`` into routes and refuses, at start-up, two
dialects that would claim the same method and path: clients of different products send
overlapping bodies, so only the prefix can tell them apart.
"""

from __future__ import annotations

import importlib

from starlette.routing import BaseRoute, Route

from authql.rest_compat._base import Dialect
from authql.services import Services
from authql.settings import ConfigError

#: dialect name -> module defining ``DIALECT``.
DIALECT_MODULES: dict[str, str] = {
    "node-auth": "authql.rest_compat.node_auth",
    "fluxkit": "authql.rest_compat.fluxkit",
    "authcore": "authql.rest_compat.authcore",
    "modularauth": "authql.rest_compat.modularauth",
    "browsary": "authql.rest_compat.browsary",
}


#: Routers some products mount beside their main one: dialect -> (module, settings field
#: holding its prefix). node-auth's tools (SSE, telemetry, webhooks) and admin REST API.
COMPANION_MODULES: dict[str, tuple[tuple[str, str], ...]] = {
    "node-auth": (
        ("authql.rest_compat.node_auth_tools", "tools_prefix"),
        ("authql.rest_compat.node_auth_admin", "admin_prefix"),
    ),
}


#: Where each product serves its routes natively (used when a dialect is not mounted).
NATIVE_PREFIXES: dict[str, str] = {
    "node-auth": "/auth",
    "fluxkit": "/auth",
    "authcore": "/api/auth",
    "modularauth": "/auth",
    "browsary": "/api/auth",
}


#: Where each product's browser-started OAuth flow begins, relative to its prefix
#: (AuthCore's sign-in is a CSRF-protected POST, so it has no plain start URL).
OAUTH_START_PATHS: dict[str, str] = {
    "node-auth": "/oauth/{provider}",
    "fluxkit": "/{provider}",
    "modularauth": "/{provider}",
    "browsary": "/external/{provider}/init",
}


def oauth_start_urls(services: Services) -> dict[str, str]:
    """Provider name -> the first mounted dialect route where a browser starts its flow."""
    urls: dict[str, str] = {}
    base = services.settings.public_url
    for client in services.oauth.all():
        for name, prefix in services.settings.rest_dialects:
            pattern = OAUTH_START_PATHS.get(name)
            if pattern is not None:
                urls[client.name] = base + prefix + pattern.format(provider=client.name)
                break
    return urls


def dialect_class(name: str) -> type[Dialect]:
    """The Dialect subclass registered under ``name``; ConfigError for unknown names."""
    if name not in DIALECT_MODULES:
        known = ", ".join(DIALECT_MODULES)
        raise ConfigError(f"AUTHQL_REST_DIALECTS: unknown dialect {name!r} (known: {known})")
    module = importlib.import_module(DIALECT_MODULES[name])
    dialect: type[Dialect] = module.DIALECT
    return dialect


def build_dialects(services: Services) -> list[Dialect]:
    """The configured dialects, each at its prefix, plus their companion routers."""
    dialects: list[Dialect] = []
    for name, prefix in services.settings.rest_dialects:
        dialects.append(dialect_class(name)(services, prefix))
        for module_name, prefix_field in COMPANION_MODULES.get(name, ()):
            module = importlib.import_module(module_name)
            dialects.append(module.DIALECT(services, getattr(services.settings, prefix_field)))
    return dialects


def openapi_documents(services: Services, name: str | None = None) -> dict[str, object]:
    """OpenAPI documents keyed by dialect name: the mounted ones, or just ``name`` (at its
    mounted prefix, else its native one)."""
    mounted = dict(services.settings.rest_dialects)
    names = [name] if name else list(mounted)
    return {
        each: dialect_class(each)(
            services, mounted.get(each, NATIVE_PREFIXES.get(each, ""))
        ).openapi()
        for each in names
    }


def dialect_routes(services: Services) -> list[BaseRoute]:
    """Routes of every configured dialect; ConfigError on unknown names or path clashes."""
    routes: list[BaseRoute] = []
    claimed: dict[tuple[str, str], str] = {}
    for dialect in build_dialects(services):
        for route in dialect.routes():
            if isinstance(route, Route):
                for method in sorted(route.methods or ()):
                    if method == "HEAD":
                        continue
                    key = (method, route.path)
                    if key in claimed:
                        raise ConfigError(
                            f"AUTHQL_REST_DIALECTS: {dialect.name} and {claimed[key]} both "
                            f"claim {method} {route.path}; mount one of them at another prefix"
                        )
                    claimed[key] = dialect.name
            routes.append(route)
    return routes
