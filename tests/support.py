"""Test helpers: a small GraphQL-over-HTTP client and the documents tests send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from starlette.applications import Starlette

PASSWORD = "correct horse battery"

REGISTER = """
mutation Register($input: RegisterInput!) {
  register(input: $input) {
    status accessToken refreshToken tokenType expiresIn
    user { id email username roles emailVerified hasPassword }
    session { id current method }
  }
}
"""

LOGIN = """
mutation Login($identifier: String!, $password: String!, $remember: Boolean) {
  login(identifier: $identifier, password: $password, remember: $remember) {
    status accessToken refreshToken tokenType expiresIn
    user { id email } session { id current method }
  }
}
"""

REFRESH = """
mutation Refresh($token: String!) {
  refresh(refreshToken: $token) { status accessToken refreshToken session { id } user { id } }
}
"""

ME = "query { me { id email username name roles } }"


@dataclass
class GraphQLResult:
    """One GraphQL response, with shortcuts for the common assertions."""

    status_code: int
    body: dict[str, Any]

    @property
    def data(self) -> dict[str, Any]:
        assert not self.body.get("errors"), self.body.get("errors")
        return self.body["data"]  # type: ignore[no-any-return]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.body.get("errors") or []

    @property
    def error_code(self) -> str | None:
        errors = self.errors
        return errors[0].get("extensions", {}).get("code") if errors else None


class GraphQLClient:
    """Sends GraphQL over HTTP to an in-process app."""

    def __init__(self, http: httpx.AsyncClient, app: Starlette) -> None:
        self.http = http
        self.app = app

    @property
    def services(self) -> Any:
        return self.app.state.services

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> GraphQLResult:
        all_headers = dict(headers or {})
        if token:
            all_headers["authorization"] = f"Bearer {token}"
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=all_headers
        )
        return GraphQLResult(response.status_code, response.json())

    async def register(
        self, email: str = "ada@example.com", password: str = PASSWORD, **fields: Any
    ) -> dict[str, Any]:
        """Register an account and return the register payload."""
        result = await self.gql(
            REGISTER, {"input": {"email": email, "password": password, **fields}}
        )
        return result.data["register"]  # type: ignore[no-any-return]

    async def login(
        self, identifier: str = "ada@example.com", password: str = PASSWORD, **extra: Any
    ) -> GraphQLResult:
        return await self.gql(LOGIN, {"identifier": identifier, "password": password, **extra})

    async def delivered(self) -> tuple[list[Any], list[Any]]:
        """Wait for queued mail and texts to leave; (mails, texts) sent so far."""
        services = self.services
        await services.delivery.drain()
        return list(getattr(services.mailer, "outbox", [])), list(
            getattr(services.sms, "outbox", [])
        )

    async def me(self, token: str) -> dict[str, Any] | None:
        return (await self.gql(ME, token=token)).data["me"]  # type: ignore[no-any-return]


def set_cookies(response: httpx.Response) -> dict[str, dict[str, str]]:
    """Set-Cookie headers as name -> {"value": ..., lower-cased attribute: value}."""
    parsed: dict[str, dict[str, str]] = {}
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        entry = {"value": value.strip('"')}
        for attribute in attributes:
            key, _, attr_value = attribute.partition("=")
            entry[key.lower()] = attr_value or "true"
        parsed[name] = entry
    return parsed


def query(location: str) -> dict[str, str]:
    """The query parameters of a URL (first value of each)."""
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}
