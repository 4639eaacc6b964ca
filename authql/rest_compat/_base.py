"""What every REST dialect shares: endpoints, transports, body parsing, errors, cookies,
rate-limit headers, OpenAPI, mounting.

A dialect is a subclass of ``Dialect`` that lists ``Endpoint``s and says how an AuthError
looks in its product (``render_error``). Handlers receive a ``DialectRequest`` whose
``context`` is the same RequestContext GraphQL builds, authenticated through the dialect's
``Transport``; they call one resolver and render its outcome. Everything a handler does not
do itself happens here, once:

- AuthError -> the dialect's status and body (+ ``Retry-After`` for RATE_LIMITED and
  ACCOUNT_LOCKED); anything unexpected -> logged with a request id, the dialect's 500 body.
- malformed or non-object bodies -> VALIDATION_ERROR through the same table.
- an endpoint's documented per-ip rate limit spent before the handler runs, with
  ``RateLimit-Limit/Remaining/Reset`` headers on its answers.
- ``<prefix>/openapi.json`` generated from the endpoint list.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from authql.context import (
    RequestContext,
    authenticate,
    authenticate_session_token,
    bearer_token,
    build_context,
)
from authql.errors import AuthError, ErrorCode, RateLimited, ValidationFailed
from authql.resolvers._common import spend
from authql.services import Services
from authql.settings import Settings

logger = logging.getLogger("authql.rest_compat")

Handler = Callable[["DialectRequest"], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    """One route of a dialect, described well enough to serve it and document it.

    ``path`` is relative to the dialect's prefix (``"/login"``, ``""`` for the prefix
    itself, ``"/sessions/{id}"`` with Starlette path parameters). ``body`` maps request
    field names to JSON types for the OpenAPI document. ``rate_limit`` names a settings
    rate-limit action spent per client ip before the handler runs.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    authenticated: bool = False
    body: Mapping[str, str] | None = None
    required: tuple[str, ...] = ()
    status: int = 200
    rate_limit: str | None = None
    query: Mapping[str, str] | None = None
    #: Path relative to the prefix's parent (Browsary's ``GET /api`` beside ``/api/auth``).
    beside_prefix: bool = False


class Transport(Protocol):
    """How a dialect's clients present their credential."""

    async def authenticate(self, request: Request, context: RequestContext) -> None:
        """Attach the principal (or mark the credential rejected) on ``context``."""
        ...


@dataclass(frozen=True)
class BearerTransport:
    """``Authorization: Bearer <access token>``, optionally falling back to a JWT cookie."""

    cookie: str | None = None

    async def authenticate(self, request: Request, context: RequestContext) -> None:
        token = bearer_token(request.headers.get("authorization"))
        if token is None and self.cookie:
            token = request.cookies.get(self.cookie)
        if token:
            await authenticate(context, token)


@dataclass(frozen=True)
class SessionCookieTransport:
    """An opaque session token in a cookie (sign-ins on this surface issue one)."""

    cookie: str

    async def authenticate(self, request: Request, context: RequestContext) -> None:
        context.session_transport = True
        token = request.cookies.get(self.cookie)
        if token:
            await authenticate_session_token(context, token)


@dataclass
class DialectRequest:
    """A request as a handler sees it: the Starlette request, the authenticated context
    and helpers that turn missing or mistyped fields into VALIDATION_ERROR."""

    request: Request
    dialect: Dialect
    context: RequestContext
    _body: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        return self.context.services.settings

    async def body(self) -> dict[str, Any]:
        """The JSON object (or form) sent; an empty body is an empty object."""
        if self._body is None:
            self._body = await _parse_body(self.request)
        return self._body

    async def string(
        self, name: str, *, required: bool = True, aliases: tuple[str, ...] = ()
    ) -> str | None:
        """A string field (first of ``name`` and ``aliases`` present)."""
        body = await self.body()
        for key in (name, *aliases):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ValidationFailed(
                    f"{key} must be a string.", fields={key: "Must be a string."}
                )
            return value
        if required:
            raise ValidationFailed(f"{name} is required.", fields={name: "Required."})
        return None

    async def require(self, name: str, *, aliases: tuple[str, ...] = ()) -> str:
        """A required string field."""
        value = await self.string(name, aliases=aliases)
        assert value is not None
        return value

    async def flag(self, name: str) -> bool:
        """A truthy-or-not field (booleans, "true"/"on"/"1" from forms)."""
        value = (await self.body()).get(name)
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "on", "yes")
        return bool(value)

    def path(self, name: str) -> str:
        return str(self.request.path_params[name])

    def query(self, name: str) -> str | None:
        return self.request.query_params.get(name)


async def _parse_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form(max_files=0, max_fields=50)
        return {key: value for key, value in form.items() if isinstance(value, str)}
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("Malformed JSON body.") from None
    if not isinstance(parsed, dict):
        raise ValidationFailed("The body must be a JSON object.")
    return parsed


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A JSON answer that is never cached (auth responses carry personal data)."""
    response = JSONResponse(body, status_code=status, headers=dict(headers or {}))
    response.headers["cache-control"] = "no-store"
    return response


def set_cookie(
    response: Response,
    settings: Settings,
    name: str,
    value: str,
    *,
    max_age: int | None,
    path: str = "/",
    http_only: bool = True,
) -> None:
    """A cookie with HttpOnly (unless said otherwise), SameSite=Lax, and Secure whenever
    the public URL is https. ``max_age=None`` makes a browser-session cookie."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=http_only,
        samesite="lax",
        secure=settings.secure_cookies,
    )


def clear_cookie(response: Response, settings: Settings, name: str, *, path: str = "/") -> None:
    """Expire a cookie set by ``set_cookie`` (same path and flags, so browsers match it)."""
    response.delete_cookie(
        name, path=path, httponly=True, samesite="lax", secure=settings.secure_cookies
    )


#: What each ErrorCode means in HTTP, for dialects that follow the contract's mapping.
DEFAULT_STATUS: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.INVALID_TOKEN: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.EMAIL_NOT_VERIFIED: 403,
    ErrorCode.TWO_FACTOR_REQUIRED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.ACCOUNT_LOCKED: 423,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.PROVIDER_ERROR: 502,
    ErrorCode.INTERNAL: 500,
}


class Dialect(abc.ABC):
    """Base class of the five dialects. Subclasses set ``name``, ``title``, ``transport``
    and implement ``endpoints`` and ``render_error`` (and ``unexpected`` when their 500
    body differs)."""

    name: ClassVar[str]
    title: ClassVar[str]
    transport: Transport = BearerTransport()

    def __init__(self, services: Services, prefix: str) -> None:
        self.services = services
        self.prefix = prefix.rstrip("/")

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @abc.abstractmethod
    def endpoints(self) -> list[Endpoint]:
        """Every route this dialect answers."""

    @abc.abstractmethod
    def render_error(self, error: AuthError) -> tuple[int, dict[str, Any]]:
        """(status, body) for ``error`` in this product's shape."""

    def unexpected(self) -> tuple[int, dict[str, Any]]:
        """(status, body) for a failure nobody planned for; never reveals internals."""
        return self.render_error(AuthError("Internal server error."))

    def url(self, path: str, *, beside_prefix: bool = False) -> str:
        """The absolute path of one of this dialect's endpoints."""
        base = self.prefix.rsplit("/", 1)[0] if beside_prefix else self.prefix
        return f"{base}{path}" or "/"

    def endpoint_url(self, endpoint: Endpoint) -> str:
        return self.url(endpoint.path, beside_prefix=endpoint.beside_prefix)

    # --- serving ---------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """Starlette routes for every endpoint, plus ``<prefix>/openapi.json``."""
        routes: list[BaseRoute] = [
            Route(self.endpoint_url(endpoint), self._serve(endpoint), methods=[endpoint.method])
            for endpoint in self.endpoints()
        ]
        routes.append(Route(self.url("/openapi.json"), self._serve_openapi, methods=["GET"]))
        return routes

    def _serve(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            context = await build_context(
                self.services,
                peer=request.client.host if request.client else None,
                forwarded_for=request.headers.get("x-forwarded-for"),
                user_agent=request.headers.get("user-agent"),
            )
            quota_headers: dict[str, str] = {}
            dialect_request = DialectRequest(request, self, context)
            try:
                await self.transport.authenticate(request, context)
                await self.before(dialect_request, endpoint)
                if endpoint.rate_limit:
                    await spend(context, endpoint.rate_limit, context.ip_address)
                    quota_headers = self._quota_headers(endpoint.rate_limit, context)
                response = await endpoint.handler(dialect_request)
            except AuthError as error:
                response = self.error_response(error)
                if isinstance(error, RateLimited) and endpoint.rate_limit:
                    quota_headers = self._quota_headers(endpoint.rate_limit, context)
            except Exception:
                logger.exception(
                    "unexpected error in %s %s (request %s)",
                    self.name,
                    endpoint.path,
                    context.request_id,
                )
                status, body = self.unexpected()
                response = json_response(body, status)
            response.headers.update(quota_headers)
            self.after(dialect_request, response)
            return response

        return serve

    async def before(self, request: DialectRequest, endpoint: Endpoint) -> None:  # noqa: B027
        """Checks every request passes after authentication (CSRF, say); raise AuthError.
        Optional hook: the default checks nothing."""

    def after(self, request: DialectRequest, response: Response) -> None:  # noqa: B027
        """Touches every response gets, errors included (a CSRF cookie, say). Optional hook:
        the default changes nothing."""

    def error_response(self, error: AuthError) -> Response:
        """The dialect's rendering of ``error``, with Retry-After where it applies."""
        status, body = self.render_error(error)
        headers = {}
        if error.retry_after is not None:
            headers["retry-after"] = str(error.retry_after)
        return json_response(body, status, headers)

    def _quota_headers(self, action: str, context: RequestContext) -> dict[str, str]:
        if context.ip_address is None:
            return {}
        quota = self.services.limiter.quota(action, context.ip_address)
        if quota is None:
            return {}
        return {
            "ratelimit-limit": str(quota.limit),
            "ratelimit-remaining": str(quota.remaining),
            "ratelimit-reset": str(quota.reset_seconds),
        }

    async def _serve_openapi(self, _: Request) -> Response:
        return JSONResponse(self.openapi())

    # --- documentation ---------------------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        """An OpenAPI 3.1 document generated from ``endpoints()``."""
        paths: dict[str, dict[str, Any]] = {}
        for endpoint in self.endpoints():
            operation: dict[str, Any] = {
                "summary": endpoint.summary,
                "operationId": f"{endpoint.method.lower()}_{_slug(self.endpoint_url(endpoint))}",
                "responses": {
                    str(endpoint.status): {"description": "Success"},
                    "default": {"description": "Error in this product's error shape"},
                },
            }
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _path_params(endpoint.path)
            ]
            parameters += [
                {"name": name, "in": "query", "required": False, "schema": {"type": kind}}
                for name, kind in (endpoint.query or {}).items()
            ]
            if parameters:
                operation["parameters"] = parameters
            if endpoint.body is not None:
                schema: dict[str, Any] = {
                    "type": "object",
                    "properties": {name: {"type": kind} for name, kind in endpoint.body.items()},
                }
                if endpoint.required:
                    schema["required"] = list(endpoint.required)
                operation["requestBody"] = {
                    "required": bool(endpoint.required),
                    "content": {"application/json": {"schema": schema}},
                }
            if endpoint.authenticated:
                operation["security"] = [{"credential": []}]
            paths.setdefault(self.endpoint_url(endpoint), {})[endpoint.method.lower()] = operation
        return {
            "openapi": "3.1.0",
            "info": {"title": f"authql: {self.title} compatibility", "version": _version()},
            "paths": paths,
            "components": {"securitySchemes": {"credential": self._security_scheme()}},
        }

    def _security_scheme(self) -> dict[str, Any]:
        transport = self.transport
        if isinstance(transport, SessionCookieTransport):
            return {"type": "apiKey", "in": "cookie", "name": transport.cookie}
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":", 1)[0] for part in path.split("/") if part.startswith("{")]


def _slug(path: str) -> str:
    return "_".join(part.strip("{}").split(":", 1)[0] for part in path.split("/") if part)


def _version() -> str:
    import authql

    return authql.__version__
