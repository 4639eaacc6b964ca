"""The raw floor authql's GraphQL ``me`` is measured against.

A plain Starlette app with one route, ``GET /me``, doing the least work any authenticated
"who am I" endpoint must do: verify the bearer JWT (EdDSA signature, ``typ``/``kid`` header,
``aud``/``iss``/``exp`` and the same required claims authql insists on) and fetch the user
row by id with Tortoise. Nothing else: no GraphQL, no middleware, no token or user cache (the
point of a floor is that it skips every convenience, so authql has to earn a ratio >= 1.0
through its caches rather than by doing less checking).

It reads the same ``AUTHQL_*`` variables authql does (database URL, signing key, public
URL, audience), so both servers check identical tokens against the same SQLite file.
Start it with ``uvicorn --app-dir bench floor_app:app_from_env --factory``; bench/run.py does.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tortoise.contrib.starlette import RegisterTortoise

from authql.db import tortoise_config
from authql.models import User
from authql.services.tokens import ACCESS_TOKEN_TYPE, AccessTokenService
from authql.settings import Settings, from_env

#: The claims authql's verifier requires (authql/services/tokens.py, AccessTokenService).
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "sid"]

_UNAUTHORIZED = {"error": "unauthorized"}


def create_floor_app(settings: Settings) -> Starlette:
    """The floor app for ``settings`` (only the database, key, issuer and audience matter)."""
    private_key = serialization.load_pem_private_key(
        settings.jwt_private_key.encode(), password=None
    )
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        algorithm = "EdDSA"
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        algorithm = "ES256"
    else:
        raise ValueError("AUTHQL_JWT_PRIVATE_KEY must be an Ed25519 or P-256 private key")
    public_key = private_key.public_key()
    # The key id is configuration, computed once; taking it from authql keeps the RFC 7638
    # thumbprint in one place. Verification below does not go through authql (no cache).
    kid = AccessTokenService(
        settings.jwt_private_key,
        issuer=settings.issuer,
        audience=settings.jwt_audience,
        ttl=settings.access_token_ttl,
    ).kid
    issuer = settings.issuer
    audience = settings.jwt_audience

    def verify(token: str) -> dict[str, Any] | None:
        """The token's claims, or None: the same checks as authql's verifier, uncached."""
        if len(token) > 4096:
            return None
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != ACCESS_TOKEN_TYPE or header.get("kid") != kid:
                return None
            claims: dict[str, Any] = jwt.decode(
                token,
                public_key,
                algorithms=[algorithm],
                audience=audience,
                issuer=issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError:
            return None
        return claims

    async def me(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        claims = verify(token.strip()) if scheme.lower() == "bearer" else None
        if claims is None:
            return JSONResponse(_UNAUTHORIZED, status_code=401)
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError:
            return JSONResponse(_UNAUTHORIZED, status_code=401)
        user = await User.get_or_none(id=user_id)
        if user is None or user.deleted_at is not None:
            return JSONResponse(_UNAUTHORIZED, status_code=401)
        return JSONResponse({"id": str(user.id), "email": user.email})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # RegisterTortoise, not a bare Tortoise.init: under uvicorn the ORM context must be
        # opened the way authql's own lifespan does it for connections to be usable.
        async with RegisterTortoise(app, config=tortoise_config(settings.database_url)):
            yield

    return Starlette(routes=[Route("/me", me, methods=["GET"])], lifespan=lifespan)


def app_from_env() -> Starlette:
    """uvicorn factory: the floor configured from the same ``AUTHQL_*`` variables."""
    settings = from_env()
    if not settings.jwt_private_key:
        raise SystemExit("floor_app: AUTHQL_JWT_PRIVATE_KEY must be set (bench/run.py sets it)")
    return create_floor_app(settings)
