"""The composition root: ``create_app(settings)`` builds every service once and mounts every
surface (GraphQL over HTTP and websockets, REST dialects, JWKS, health)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from authql.context import build_context
from authql.db import tortoise_config
from authql.errors import Unauthorized
from authql.jobs import Jobs, start_jobs
from authql.middleware import BodyLimitMiddleware, RequestMetricsMiddleware, request_surfaces
from authql.resolvers import meta
from authql.resolvers.metrics import prometheus_exposition
from authql.rest_compat import dialect_routes, oauth_start_urls
from authql.schema import build_schema
from authql.schema.view import AuthqlGraphQL
from authql.services import Services, build_services
from authql.services.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from authql.settings import Settings, from_env

logger = logging.getLogger("authql")


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    manage_database: bool = True,
) -> Starlette:
    """Build the ASGI app.

    ``manage_database`` opens the Tortoise connections in the lifespan; tests that open the
    database themselves (and drive the app through httpx without a lifespan) pass False.
    """
    settings = (settings or from_env()).with_generated_secrets()
    services = services or build_services(settings)
    services.oauth.start_urls = oauth_start_urls(services)
    graphql = AuthqlGraphQL(
        build_schema(settings),
        services,
        graphql_ide=None if settings.production else "graphiql",
        allowed_origins=settings.cors_origins,
        connection_init_wait_timeout=dt.timedelta(seconds=10),
        max_subscriptions_per_connection=settings.ws_max_subscriptions_per_connection,
        max_subscriptions_per_user=settings.ws_max_subscriptions_per_user,
        keep_alive=True,
        keep_alive_interval=15,
    )

    async def jwks(_: Request) -> Response:
        return JSONResponse(
            services.access_tokens.jwks(), headers={"cache-control": "public, max-age=300"}
        )

    async def health(request: Request) -> Response:
        context = await build_context(
            services, peer=request.client.host if request.client else None
        )
        view = await meta.health(context)
        return JSONResponse(
            {"status": view.status, "version": view.version, "database": view.database},
            status_code=200 if view.database else 503,
        )

    routes: list[BaseRoute] = [
        Route("/graphql", graphql),
        WebSocketRoute("/graphql", graphql),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        *dialect_routes(services),
    ]

    async def prometheus(request: Request) -> Response:
        try:
            body = await prometheus_exposition(
                services, authorization=request.headers.get("authorization")
            )
        except Unauthorized:
            return Response(status_code=401, headers={"www-authenticate": "Bearer"})
        return Response(body, headers={"content-type": METRICS_CONTENT_TYPE})

    if settings.metrics_token:  # off (404) unless a scrape token is configured
        routes.append(Route("/metrics", prometheus, methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_database:
            from tortoise.contrib.starlette import RegisterTortoise

            async with RegisterTortoise(app, config=tortoise_config(settings.database_url)):
                await services.start()
                jobs = start_jobs(services)
                yield
                await _shutdown(services, jobs)
        else:
            await services.start()
            jobs = start_jobs(services)
            yield
            await _shutdown(services, jobs)
        services.close()

    services.metrics.bind(limiter=services.limiter, events=services.events)
    middleware = [
        Middleware(
            RequestMetricsMiddleware,
            metrics=services.metrics,
            surfaces=request_surfaces(settings),
        ),
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_credentials=True,
                allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["authorization", "content-type", "x-csrf-token"],
            )
        )
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.services = services
    app.state.settings = settings
    return app


async def _shutdown(services: Services, jobs: Jobs, grace: float = 5.0) -> None:
    """Stop periodic jobs, give queued mail and SMS a moment to leave, then stop the
    delivery worker and the background services."""
    await jobs.stop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(services.delivery.drain(), grace)
    await services.delivery.close()
    await services.stop()


class RedactQueryStrings(logging.Filter):
    """Drop query strings from uvicorn's access log: links carry one-time tokens there."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def app_from_env() -> Starlette:
    """uvicorn factory: ``uvicorn --factory authql.app:app_from_env``."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryStrings) for f in access.filters):
        access.addFilter(RedactQueryStrings())
    return create_app(from_env())
