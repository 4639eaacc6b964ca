"""The dialect framework (rest_compat._base and mounting), through a small test dialect."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import Response

from authql.errors import AuthError
from authql.resolvers import sessions
from authql.rest_compat import dialect_class, dialect_routes
from authql.rest_compat._base import (
    DEFAULT_STATUS,
    Dialect,
    DialectRequest,
    Endpoint,
    json_response,
    set_cookie,
)
from authql.services import build_services
from authql.settings import ConfigError
from tests.conftest import settings_for_tests
from tests.support import PASSWORD, GraphQLClient


class EchoDialect(Dialect):
    """A dialect that exists only to exercise the framework."""

    name = "echo"
    title = "Echo"

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "POST",
                "/login",
                self.login,
                "Sign in",
                body={"email": "string", "password": "string"},
                required=("email", "password"),
                rate_limit="authcore_auth",
            ),
            Endpoint("GET", "/me", self.me, "Who am I", authenticated=True),
            Endpoint("GET", "/sessions/{id}", self.boom, "Always fails"),
            Endpoint("GET", "", self.root, "Beside the prefix", beside_prefix=True),
        ]

    def render_error(self, error: AuthError) -> tuple[int, dict[str, Any]]:
        return DEFAULT_STATUS[error.code], {"oops": error.code.value, "fields": error.fields}

    async def login(self, request: DialectRequest) -> Response:
        outcome = await sessions.login(
            request.context,
            identifier=await request.require("email"),
            password=await request.require("password"),
        )
        response = json_response({"token": outcome.access_token})
        set_cookie(response, request.settings, "echo", "1", max_age=None)
        return response

    async def me(self, request: DialectRequest) -> Response:
        return json_response({"email": request.context.require_principal().user.email})

    async def boom(self, request: DialectRequest) -> Response:
        raise RuntimeError("secret internals")

    async def root(self, request: DialectRequest) -> Response:
        return json_response({"root": True})


def echo_app(**overrides: Any) -> Starlette:
    """An app with only the echo dialect mounted at /echo/auth."""
    settings = settings_for_tests(**overrides)
    services = build_services(settings)
    return Starlette(routes=EchoDialect(services, "/echo/auth").routes())


async def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("203.0.113.9", 1)),
        base_url="http://testserver",
    )


async def test_handler_calls_the_shared_resolvers(client: GraphQLClient) -> None:
    """An account registered over GraphQL signs in through a dialect and is recognised."""
    await client.register("ada@example.com")
    async with await _client(echo_app()) as http:
        login = await http.post(
            "/echo/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
        )
        assert login.status_code == 200
        token = login.json()["token"]
        me = await http.get("/echo/auth/me", headers={"authorization": f"Bearer {token}"})
        assert me.json() == {"email": "ada@example.com"}
        assert login.headers["cache-control"] == "no-store"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie


async def test_secure_cookies_follow_an_https_public_url(client: GraphQLClient) -> None:
    """With an https public URL every cookie carries Secure."""
    await client.register("ada@example.com")
    async with await _client(echo_app(public_url="https://auth.example")) as http:
        login = await http.post(
            "/echo/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
        )
    assert "secure" in login.headers["set-cookie"].lower()


@pytest.mark.parametrize(
    ("content", "headers", "field"),
    [
        (b"{not json", {"content-type": "application/json"}, None),
        (b"[1, 2]", {"content-type": "application/json"}, None),
        (b'{"email": 5, "password": "x"}', {"content-type": "application/json"}, "email"),
        (b'{"password": "x"}', {"content-type": "application/json"}, "email"),
    ],
)
async def test_bad_bodies_are_validation_errors(
    content: bytes, headers: dict[str, str], field: str | None
) -> None:
    """Malformed, non-object and mistyped bodies answer VALIDATION_ERROR in the dialect's
    shape, naming the field when there is one."""
    async with await _client(echo_app()) as http:
        response = await http.post("/echo/auth/login", content=content, headers=headers)
    assert response.status_code == 400
    assert response.json()["oops"] == "VALIDATION_ERROR"
    if field:
        assert field in response.json()["fields"]


async def test_forms_are_parsed_like_json(client: GraphQLClient) -> None:
    """A form-encoded body reaches the handler as the same fields."""
    await client.register("ada@example.com")
    async with await _client(echo_app()) as http:
        login = await http.post(
            "/echo/auth/login", data={"email": "ada@example.com", "password": PASSWORD}
        )
    assert login.status_code == 200 and login.json()["token"]


async def test_unexpected_errors_are_masked() -> None:
    """A crash answers the dialect's 500 body without any internals."""
    async with await _client(echo_app()) as http:
        response = await http.get("/echo/auth/sessions/1")
    assert response.status_code == 500
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert response.json()["oops"] == "INTERNAL"


async def test_rate_limited_endpoints_send_quota_headers() -> None:
    """An endpoint's documented limit answers 429 with Retry-After and RateLimit-* headers."""
    app = echo_app(rate_limits={"authcore_auth": (2, 900)})
    body = {"email": "nobody@example.com", "password": "wrong password"}
    async with await _client(app) as http:
        first = await http.post("/echo/auth/login", json=body)
        assert first.status_code == 401
        assert first.headers["ratelimit-limit"] == "2"
        assert first.headers["ratelimit-remaining"] == "1"
        await http.post("/echo/auth/login", json=body)
        third = await http.post("/echo/auth/login", json=body)
    assert third.status_code == 429
    assert int(third.headers["retry-after"]) > 0
    assert third.headers["ratelimit-remaining"] == "0"


async def test_openapi_document_is_generated_from_the_endpoints() -> None:
    """<prefix>/openapi.json lists every endpoint with its body, parameters and security."""
    async with await _client(echo_app()) as http:
        spec = (await http.get("/echo/auth/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == {
        "/echo/auth/login",
        "/echo/auth/me",
        "/echo/auth/sessions/{id}",
        "/echo",
    }
    login = spec["paths"]["/echo/auth/login"]["post"]
    schema = login["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["email", "password"]
    assert spec["paths"]["/echo/auth/me"]["get"]["security"] == [{"credential": []}]
    assert spec["paths"]["/echo/auth/sessions/{id}"]["get"]["parameters"][0]["name"] == "id"


async def test_endpoints_beside_the_prefix_are_served_there() -> None:
    """An endpoint declared beside the prefix answers at the prefix's parent path."""
    async with await _client(echo_app()) as http:
        assert (await http.get("/echo")).json() == {"root": True}


def test_unknown_dialect_names_refuse_to_start() -> None:
    """A typo in AUTHQL_REST_DIALECTS is a clear configuration error, not a silent skip."""
    with pytest.raises(ConfigError, match="unknown dialect 'nodeauth'"):
        dialect_class("nodeauth")


def test_two_dialects_on_one_path_refuse_to_start() -> None:
    """Mounting two dialects that answer the same method and path is refused at start-up,
    naming both and the clash."""
    services = build_services(
        settings_for_tests(rest_dialects=(("node-auth", "/auth"), ("modularauth", "/auth")))
    )
    with pytest.raises(ConfigError, match=r"node-auth and modularauth|modularauth and node-auth"):
        dialect_routes(services)


def test_the_same_dialects_at_separate_prefixes_start() -> None:
    """Each dialect can be mounted anywhere; separate prefixes never clash."""
    dialects = (
        ("node-auth", "/auth"),
        ("fluxkit", "/compat/fluxkit/auth"),
        ("modularauth", "/compat/modularauth/auth"),
        ("authcore", "/compat/authcore/api/auth"),
        ("browsary", "/api/auth"),
    )
    routes = dialect_routes(build_services(settings_for_tests(rest_dialects=dialects)))
    paths = {getattr(route, "path", "") for route in routes}
    assert {f"{prefix}/openapi.json" for _, prefix in dialects} <= paths
