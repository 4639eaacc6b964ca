"""Protections on every surface: GraphQL limits, error masking, introspection, body cap,
GET semantics, CORS, JWKS, health and secret handling."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from authql.models import User
from authql.settings import ConfigError, Settings
from tests.support import PASSWORD, GraphQLClient

#: The ErrorCode enum of the GraphQL contract (design/schema.graphql).
CONTRACT_ERROR_CODES = {
    "VALIDATION_ERROR",
    "UNAUTHORIZED",
    "INVALID_CREDENTIALS",
    "INVALID_TOKEN",
    "FORBIDDEN",
    "EMAIL_NOT_VERIFIED",
    "TWO_FACTOR_REQUIRED",
    "NOT_FOUND",
    "CONFLICT",
    "ACCOUNT_LOCKED",
    "RATE_LIMITED",
    "PROVIDER_ERROR",
}


def _assert_no_leak(text: str) -> None:
    """A response body carries no traceback, source path or exception text."""
    assert "Traceback" not in text
    assert ".py" not in text
    assert "secret internals" not in text
    assert "RuntimeError" not in text


# --- GraphQL document limits ----------------------------------------------------------------


async def test_query_deeper_than_the_limit_is_refused(
    make_client: Callable[..., GraphQLClient],
) -> None:
    """A document nested deeper than graphql_max_depth is refused before execution."""
    query = "{ users { edges { node { roles } } } }"
    # The same document passes validation on a default app (it then needs an admin)...
    assert (await make_client().gql(query)).error_code == "UNAUTHORIZED"
    client = make_client(graphql_max_depth=2)
    shallow = await client.gql("{ health { status } }")
    assert shallow.data["health"]["status"] == "healthy"
    # ...but not on one with a lower limit, whatever the other app has cached.
    deep = await client.gql(query)
    assert deep.error_code == "VALIDATION_ERROR"
    assert "depth" in deep.errors[0]["message"]
    assert deep.body.get("data") is None


async def test_default_depth_limit_is_ten(client: GraphQLClient) -> None:
    """With default settings a selection nested 11 levels below the root is refused."""
    selection = "leaf"
    for name in "abcdefghij":
        selection = f"{name} {{ {selection} }}"
    result = await client.gql(f"{{ me {{ {selection} }} }}")
    assert result.body.get("data") is None
    assert all(e["extensions"]["code"] == "VALIDATION_ERROR" for e in result.errors)
    assert any("maximum operation depth of 10" in e["message"] for e in result.errors)


async def test_too_many_aliases_are_refused(client: GraphQLClient) -> None:
    """More aliases than graphql_max_aliases (15) is refused; the limit itself is allowed."""
    ok = " ".join(f"a{i}: health {{ status }}" for i in range(15))
    assert len((await client.gql(f"{{ {ok} }}")).data) == 15
    many = " ".join(f"a{i}: health {{ status }}" for i in range(16))
    result = await client.gql(f"{{ {many} }}")
    assert result.error_code == "VALIDATION_ERROR"
    assert "aliases" in result.errors[0]["message"]
    assert result.body.get("data") is None


async def test_aliases_hidden_in_fragments_are_counted(client: GraphQLClient) -> None:
    """Aliases spread through fragments count towards the same limit."""
    first = " ".join(f"a{i}: health {{ status }}" for i in range(8))
    second = " ".join(f"b{i}: health {{ status }}" for i in range(8))
    query = f"{{ ...F ...G }} fragment F on Query {{ {first} }} fragment G on Query {{ {second} }}"
    result = await client.gql(query)
    assert result.error_code == "VALIDATION_ERROR"
    assert result.body.get("data") is None


async def test_alias_limit_follows_settings(make_client: Callable[..., GraphQLClient]) -> None:
    """A lower graphql_max_aliases refuses a document another app in the process accepted."""
    query = "{ a: health { status } b: health { status } c: health { status } }"
    assert len((await make_client().gql(query)).data) == 3
    result = await make_client(graphql_max_aliases=2).gql(query)
    assert result.error_code == "VALIDATION_ERROR"
    assert result.body.get("data") is None


async def test_documents_over_the_token_limit_are_refused(client: GraphQLClient) -> None:
    """A document with more than graphql_max_tokens (2000) tokens is refused."""
    fields = " ".join(["status"] * 2100)
    result = await client.gql(f"{{ health {{ {fields} }} }}")
    assert result.error_code == "VALIDATION_ERROR"
    assert "tokens" in result.errors[0]["message"]
    assert result.body.get("data") is None


async def test_token_limit_follows_settings(make_client: Callable[..., GraphQLClient]) -> None:
    """A lower graphql_max_tokens refuses documents the default would accept."""
    fields = " ".join(["status"] * 30)
    query = f"{{ health {{ {fields} }} }}"
    assert (await make_client().gql(query)).data["health"]["status"] == "healthy"
    client = make_client(graphql_max_tokens=20)
    result = await client.gql(query)
    assert result.error_code == "VALIDATION_ERROR"
    assert result.body.get("data") is None


# --- error masking --------------------------------------------------------------------------


async def test_unexpected_exceptions_are_masked(
    client: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a resolver reaches the client as INTERNAL "Unexpected error." and nothing more."""
    from authql.resolvers import meta

    def broken(ctx: object) -> None:
        raise RuntimeError("secret internals at /srv/authql/resolvers/meta.py")

    monkeypatch.setattr(meta, "auth_providers", broken)
    response = await client.http.post("/graphql", json={"query": "{ authProviders { id } }"})
    body = response.json()
    assert body["errors"][0]["message"] == "Unexpected error."
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL"
    _assert_no_leak(response.text)
    assert "stacktrace" not in response.text.lower()


async def test_unexpected_exceptions_in_async_resolvers_are_masked(
    client: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async resolver (a mutation) failing unexpectedly is masked the same way."""
    from authql.resolvers import sessions

    async def broken(ctx: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(sessions, "login", broken)
    result = await client.login("ada@example.com", PASSWORD)
    assert result.errors[0]["message"] == "Unexpected error."
    assert result.error_code == "INTERNAL"
    _assert_no_leak(json.dumps(result.body))


# --- introspection and suggestions ----------------------------------------------------------


async def test_introspection_is_available_in_development(client: GraphQLClient) -> None:
    """Development servers answer __schema queries."""
    result = await client.gql("{ __schema { queryType { name } } }")
    assert result.data["__schema"]["queryType"]["name"] == "Query"


async def test_introspection_is_refused_when_disabled(
    make_client: Callable[..., GraphQLClient],
) -> None:
    """With introspection off, __schema and __type are refused; ordinary queries still work,
    even after a development app in the same process accepted the very same documents."""
    dev = make_client()
    assert (await dev.gql("{ __schema { queryType { name } } }")).data["__schema"]
    assert (await dev.gql('{ __type(name: "User") { name } }')).data["__type"]
    client = make_client(introspection=False)
    schema = await client.gql("{ __schema { queryType { name } } }")
    assert schema.error_code == "VALIDATION_ERROR"
    assert schema.body.get("data") is None
    by_type = await client.gql('{ __type(name: "User") { name } }')
    assert by_type.error_code == "VALIDATION_ERROR"
    assert (await client.gql("{ health { status } }")).data["health"]["status"] == "healthy"


async def test_field_suggestions_only_with_introspection(
    make_client: Callable[..., GraphQLClient],
) -> None:
    """A misspelt field gets "Did you mean" hints only when introspection is on."""
    dev = await make_client().gql("{ helth { status } }")
    assert dev.error_code == "VALIDATION_ERROR"
    assert "Did you mean" in dev.errors[0]["message"]
    prod = await make_client(introspection=False).gql("{ helth { status } }")
    assert prod.error_code == "VALIDATION_ERROR"
    assert all("Did you mean" not in e["message"] for e in prod.errors)
    assert "health" not in json.dumps(prod.body).replace("helth", "")


# --- request body cap -----------------------------------------------------------------------


async def test_declared_oversized_body_gets_413(
    make_client: Callable[..., GraphQLClient],
) -> None:
    """A body whose Content-Length exceeds max_body_bytes is refused with 413 and a code."""
    client = make_client(max_body_bytes=1024)
    padding = "x" * 2048
    response = await client.http.post(
        "/graphql", json={"query": "{ health { status } }", "variables": {"pad": padding}}
    )
    assert response.status_code == 413
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"


async def test_streamed_oversized_body_gets_413(
    make_client: Callable[..., GraphQLClient],
) -> None:
    """A chunked body without Content-Length is cut off once it passes max_body_bytes."""
    client = make_client(max_body_bytes=1024)
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "{ health { status } }", "variables": {"pad": "'
        for _ in range(64):
            sent.append(1)
            yield b"x" * 256
        yield b'"}}'

    response = await client.http.post(
        "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"
    assert len(sent) < 64  # the server stopped reading instead of buffering everything


async def test_body_within_the_cap_is_served(make_client: Callable[..., GraphQLClient]) -> None:
    """A request just under the cap is processed normally, streamed or declared."""
    client = make_client(max_body_bytes=1024)
    assert (await client.gql("{ health { status } }")).data["health"]["status"] == "healthy"

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "{ health '
        yield b'{ status } }"}'

    response = await client.http.post(
        "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json()["data"]["health"]["status"] == "healthy"


# --- transport semantics --------------------------------------------------------------------


async def test_queries_work_over_get(client: GraphQLClient) -> None:
    """GET /graphql?query=... runs queries."""
    response = await client.http.get("/graphql", params={"query": "{health{status}}"})
    assert response.status_code == 200
    assert response.json()["data"]["health"]["status"] == "healthy"


async def test_mutations_are_not_executed_over_get(client: GraphQLClient) -> None:
    """A mutation sent with GET is refused and has no effect (no CSRF through links)."""
    mutation = "mutation($i: RegisterInput!) { register(input: $i) { status } }"
    variables = {"i": {"email": "get@example.com", "password": PASSWORD}}
    response = await client.http.get(
        "/graphql", params={"query": mutation, "variables": json.dumps(variables)}
    )
    assert 400 <= response.status_code < 500
    assert await User.all().count() == 0


async def test_batched_requests_are_not_executed(client: GraphQLClient) -> None:
    """A JSON array of operations is refused as a whole; none of them runs."""
    mutation = "mutation($i: RegisterInput!) { register(input: $i) { status } }"
    batch = [
        {
            "query": mutation,
            "variables": {"i": {"email": f"b{i}@example.com", "password": PASSWORD}},
        }
        for i in range(3)
    ]
    response = await client.http.post("/graphql", json=batch)
    assert 400 <= response.status_code < 500
    assert await User.all().count() == 0


async def test_malformed_json_gets_400_without_stack_trace(client: GraphQLClient) -> None:
    """A body that is not JSON is a 400 client error with no internals in it."""
    response = await client.http.post(
        "/graphql",
        content=b'{"query": "{ health { status } }",',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    _assert_no_leak(response.text)


async def test_every_failure_kind_carries_a_contract_code(client: GraphQLClient) -> None:
    """Syntax, auth, credential, conflict, permission, token and lookup failures all carry a
    code from the contract's ErrorCode list."""
    registered = await client.register("ada@example.com")
    token = registered["accessToken"]
    failures: dict[str, Any] = {
        "VALIDATION_ERROR": await client.gql("{ health { status "),
        "UNAUTHORIZED": await client.gql("mutation { logout }"),
        "INVALID_CREDENTIALS": await client.login("ada@example.com", "wrong password!"),
        "CONFLICT": await client.gql(
            "mutation($i: RegisterInput!) { register(input: $i) { status } }",
            {"i": {"email": "ada@example.com", "password": PASSWORD}},
        ),
        "FORBIDDEN": await client.gql("{ users { totalCount } }", token=token),
        "INVALID_TOKEN": await client.gql('mutation { refresh(refreshToken: "nope") { status } }'),
        "NOT_FOUND": await client.gql(
            "mutation($id: ID!) { revokeSession(id: $id) }",
            {"id": str(uuid.uuid4())},
            token=token,
        ),
    }
    for expected, result in failures.items():
        assert result.errors, expected
        for error in result.errors:
            assert error["extensions"]["code"] in CONTRACT_ERROR_CODES, error
        assert result.error_code == expected, result.errors


async def test_unknown_variables_and_wrong_types_are_validation_errors(
    client: GraphQLClient,
) -> None:
    """Variable type errors are reported as VALIDATION_ERROR, not as internal failures."""
    result = await client.gql(
        "mutation($i: RegisterInput!) { register(input: $i) { status } }", {"i": {"email": 5}}
    )
    assert result.error_code == "VALIDATION_ERROR"
    _assert_no_leak(json.dumps(result.body))


# --- CORS -----------------------------------------------------------------------------------


async def test_cors_preflight_allows_only_configured_origins(
    make_client: Callable[..., GraphQLClient],
) -> None:
    """A preflight from a listed origin is allowed; any other origin is not reflected."""
    client = make_client(cors_origins=("https://app.example",))
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, authorization",
    }
    allowed = await client.http.options(
        "/graphql", headers={"origin": "https://app.example", **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    refused = await client.http.options(
        "/graphql", headers={"origin": "https://evil.example", **preflight}
    )
    assert refused.headers.get("access-control-allow-origin") in (None, "")
    assert "evil.example" not in refused.headers.get("access-control-allow-origin", "")


async def test_cors_simple_request_does_not_reflect_foreign_origin(
    make_client: Callable[..., GraphQLClient],
) -> None:
    """An actual request from an unlisted origin gets no Access-Control-Allow-Origin."""
    client = make_client(cors_origins=("https://app.example",))
    listed = await client.gql("{ health { status } }", headers={"origin": "https://app.example"})
    assert listed.status_code == 200
    response = await client.http.post(
        "/graphql",
        json={"query": "{ health { status } }"},
        headers={"origin": "https://evil.example"},
    )
    assert "access-control-allow-origin" not in response.headers


# --- JWKS and access tokens -----------------------------------------------------------------


async def test_jwks_publishes_one_public_ed25519_key(client: GraphQLClient) -> None:
    """The JWKS holds exactly one OKP/Ed25519 signing key and no private member."""
    response = await client.http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519"
    assert key["alg"] == "EdDSA" and key["use"] == "sig"
    assert key["kid"] and key["x"]
    assert "d" not in key


async def test_access_tokens_verify_with_the_published_key(client: GraphQLClient) -> None:
    """An access token names the JWKS key id and verifies with its public key alone."""
    payload = await client.register("ada@example.com")
    token = payload["accessToken"]
    jwk = (await client.http.get("/.well-known/jwks.json")).json()["keys"][0]
    header = jwt.get_unverified_header(token)
    assert header["kid"] == jwk["kid"]
    assert header["alg"] == "EdDSA"
    public = jwt.PyJWK(jwk)
    settings = client.app.state.settings
    claims = jwt.decode(
        token,
        public.key,
        algorithms=["EdDSA"],
        audience=settings.jwt_audience,
        issuer=settings.issuer,
    )
    for claim in ("sub", "sid", "roles", "iat", "exp", "iss", "aud"):
        assert claim in claims, claim
    assert claims["sub"] == payload["user"]["id"]
    assert claims["sid"] == payload["session"]["id"]
    assert claims["roles"] == []
    assert claims["exp"] - claims["iat"] == payload["expiresIn"]


# --- health and meta ------------------------------------------------------------------------


async def test_health_endpoint_reports_healthy(client: GraphQLClient) -> None:
    """GET /health answers 200 healthy with a working database."""
    response = await client.http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["database"] is True


async def test_health_and_auth_providers_over_graphql(client: GraphQLClient) -> None:
    """The health query and authProviders answer anonymous callers."""
    result = await client.gql(
        "{ health { status version database providers } authProviders { id kind name } }"
    )
    data = result.data
    assert data["health"]["status"] == "healthy"
    assert data["health"]["database"] is True
    assert data["health"]["version"]
    assert "local" in data["health"]["providers"]
    assert {"id": "local", "kind": "password", "name": "Email and password"} in data[
        "authProviders"
    ]


# --- secrets --------------------------------------------------------------------------------


def test_production_refuses_generated_secrets(tmp_path: Path) -> None:
    """A production configuration without secrets is a start-up error naming them."""
    settings = Settings(env="production", data_dir=tmp_path / "data")
    with pytest.raises(ConfigError) as info:
        settings.with_generated_secrets()
    assert "AUTHQL_SECRET_KEY" in str(info.value)
    assert "AUTHQL_JWT_PRIVATE_KEY" in str(info.value)
    assert not (tmp_path / "data" / "secret_key").exists()


def test_development_persists_generated_secrets_privately(tmp_path: Path) -> None:
    """Development generates secrets once, stores them with mode 0600 and reuses them."""
    data_dir = tmp_path / "data"
    first = Settings(env="development", data_dir=data_dir).with_generated_secrets()
    assert len(first.secret_key) >= 32
    assert "PRIVATE KEY" in first.jwt_private_key
    for name in ("secret_key", "jwt_private_key.pem"):
        mode = stat.S_IMODE((data_dir / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    second = Settings(env="development", data_dir=data_dir).with_generated_secrets()
    assert second.secret_key == first.secret_key
    assert second.jwt_private_key.strip() == first.jwt_private_key.strip()


async def test_apps_sharing_persisted_secrets_accept_each_others_tokens(
    tmp_path: Path, make_client: Callable[..., GraphQLClient]
) -> None:
    """Two development apps built from the same data folder (a restart) share the signing key."""
    settings = Settings(env="development", data_dir=tmp_path).with_generated_secrets()
    before = make_client(jwt_private_key=settings.jwt_private_key)
    token = (await before.register("ada@example.com"))["accessToken"]
    again = Settings(env="development", data_dir=tmp_path).with_generated_secrets()
    after = make_client(jwt_private_key=again.jwt_private_key)
    me = await after.me(token)
    assert me is not None and me["email"] == "ada@example.com"
