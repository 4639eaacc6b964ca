"""Service-level reads: health and the sign-in methods on offer."""

from __future__ import annotations

from dataclasses import dataclass

from tortoise.connection import get_connection

import authql
from authql.context import RequestContext


@dataclass(frozen=True)
class HealthView:
    status: str
    version: str
    database: bool
    providers: tuple[str, ...]


@dataclass(frozen=True)
class ProviderView:
    id: str
    kind: str
    name: str
    authorize_url: str | None = None


def auth_providers(ctx: RequestContext) -> list[ProviderView]:
    """The sign-in methods this server offers, external providers included."""
    return [
        ProviderView(id="local", kind="password", name="Email and password"),
        ProviderView(id="magic-link", kind="passwordless", name="Email link"),
        ProviderView(id="sms", kind="passwordless", name="Text message code"),
        ProviderView(id="totp", kind="second-factor", name="Authenticator app"),
        *(
            ProviderView(
                id=client.name,
                kind="oauth",
                name=client.display_name,
                authorize_url=ctx.services.oauth.start_urls.get(client.name),
            )
            for client in ctx.services.oauth.all()
        ),
    ]


async def health(ctx: RequestContext) -> HealthView:
    """``healthy`` when the database answers, ``degraded`` otherwise."""
    try:
        await get_connection("default").execute_query("SELECT 1")
        database = True
    except Exception:
        database = False
    return HealthView(
        status="healthy" if database else "degraded",
        version=authql.__version__,
        database=database,
        providers=tuple(provider.id for provider in auth_providers(ctx)),
    )
