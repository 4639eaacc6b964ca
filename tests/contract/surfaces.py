"""One small client per surface (GraphQL and each REST dialect), all speaking the same
verbs, so a scenario can be written once and run against every surface.

A ``Credential`` is whatever the surface hands a signed-in client: bearer tokens and/or
cookies. Clients hold no cookie jar of their own: each request sends exactly the
credential it is given, so an old credential can be replayed after logout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support import LOGIN, ME, REFRESH, REGISTER


@dataclass(frozen=True)
class Credential:
    """What a client keeps after signing in."""

    bearer: str | None = None
    refresh: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)


class Refused(Exception):
    """The surface refused the request (any documented error)."""


class Surface:
    """A client for one surface; subclasses translate the verbs to the product's API."""

    name = "surface"
    prefix = ""
    has_refresh = False

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def call(
        self,
        method: str,
        path: str,
        credential: Credential | None = None,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if credential and credential.bearer:
            sent["authorization"] = f"Bearer {credential.bearer}"
        if credential and credential.cookies:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in credential.cookies.items())
        response = await self.http.request(method, self.prefix + path, json=json, headers=sent)
        self.http.cookies.clear()
        return response

    async def register(self, email: str, password: str) -> None: ...
    async def login(self, email: str, password: str) -> Credential: ...
    async def me(self, credential: Credential) -> str | None: ...
    async def refresh(self, credential: Credential) -> Credential: ...
    async def logout(self, credential: Credential) -> None: ...


def _ok(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise Refused(f"{response.status_code} {response.text}")
    return response


def _cookies(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.cookies.items() if value}


class GraphQLSurface(Surface):
    name = "graphql"
    has_refresh = True

    async def _gql(
        self, query: str, variables: dict[str, Any], credential: Credential | None = None
    ) -> dict[str, Any]:
        response = await self.call(
            "POST", "/graphql", credential, json={"query": query, "variables": variables}
        )
        body = response.json()
        if body.get("errors"):
            raise Refused(str(body["errors"]))
        return body["data"]  # type: ignore[no-any-return]

    async def register(self, email: str, password: str) -> None:
        await self._gql(REGISTER, {"input": {"email": email, "password": password}})

    async def login(self, email: str, password: str) -> Credential:
        data = (await self._gql(LOGIN, {"identifier": email, "password": password}))["login"]
        return Credential(bearer=data["accessToken"], refresh=data["refreshToken"])

    async def me(self, credential: Credential) -> str | None:
        me = (await self._gql(ME, {}, credential))["me"]
        return me["email"] if me else None

    async def refresh(self, credential: Credential) -> Credential:
        data = (await self._gql(REFRESH, {"token": credential.refresh}))["refresh"]
        return Credential(bearer=data["accessToken"], refresh=data["refreshToken"])

    async def logout(self, credential: Credential) -> None:
        await self._gql("mutation { logout }", {}, credential)


class NodeAuthSurface(Surface):
    """node-auth in its default cookie mode (accessToken + path-scoped refreshToken)."""

    name = "node-auth"
    prefix = "/auth"
    has_refresh = True

    async def register(self, email: str, password: str) -> None:
        _ok(await self.call("POST", "/register", json={"email": email, "password": password}))

    async def login(self, email: str, password: str) -> Credential:
        response = _ok(
            await self.call("POST", "/login", json={"email": email, "password": password})
        )
        return Credential(cookies=_cookies(response))

    async def me(self, credential: Credential) -> str | None:
        response = await self.call("GET", "/me", credential)
        return response.json()["email"] if response.status_code == 200 else None

    async def refresh(self, credential: Credential) -> Credential:
        response = _ok(await self.call("POST", "/refresh", credential))
        return Credential(cookies=_cookies(response))

    async def logout(self, credential: Credential) -> None:
        _ok(await self.call("POST", "/logout", credential))


class FluxKitSurface(Surface):
    name = "fluxkit"
    prefix = "/compat/fluxkit/auth"
    has_refresh = True

    async def register(self, email: str, password: str) -> None:
        _ok(await self.call("POST", "/register", json={"email": email, "password": password}))

    async def login(self, email: str, password: str) -> Credential:
        body = _ok(
            await self.call("POST", "/login", json={"email": email, "password": password})
        ).json()
        return Credential(bearer=body["token"], refresh=body["refreshToken"])

    async def me(self, credential: Credential) -> str | None:
        response = await self.call("GET", "/me", credential)
        return response.json()["user"]["email"] if response.status_code == 200 else None

    async def refresh(self, credential: Credential) -> Credential:
        body = _ok(
            await self.call("POST", "/refresh", json={"refreshToken": credential.refresh})
        ).json()
        return Credential(bearer=body["token"], refresh=body["refreshToken"])

    async def logout(self, credential: Credential) -> None:
        _ok(await self.call("POST", "/logout", credential))


class AuthCoreSurface(Surface):
    """AuthCore's NextAuth-style routes on its session cookie (CSRF token first)."""

    name = "authcore"
    prefix = "/compat/authcore/api/auth"

    async def _csrf(self, cookies: dict[str, str]) -> tuple[str, dict[str, str]]:
        response = _ok(await self.call("GET", "/csrf", Credential(cookies=cookies)))
        return response.json()["csrfToken"], {**cookies, **_cookies(response)}

    async def register(self, email: str, password: str) -> None:
        _ok(await self.call("POST", "/register", json={"email": email, "password": password}))

    async def login(self, email: str, password: str) -> Credential:
        token, cookies = await self._csrf({})
        response = _ok(
            await self.call(
                "POST",
                "/callback/credentials",
                Credential(cookies=cookies),
                json={"email": email, "password": password, "csrfToken": token, "json": True},
            )
        )
        return Credential(cookies={**cookies, **_cookies(response)})

    async def me(self, credential: Credential) -> str | None:
        session = _ok(await self.call("GET", "/session", credential)).json()
        return session["user"]["email"] if session.get("user") else None

    async def logout(self, credential: Credential) -> None:
        token, cookies = await self._csrf(credential.cookies)
        _ok(
            await self.call(
                "POST",
                "/signout",
                Credential(cookies=cookies),
                json={"csrfToken": token, "json": True},
            )
        )


class ModularAuthSurface(Surface):
    """ModularAuth-Kit's sid cookie, with its _csrf double submit on every mutation."""

    name = "modularauth"
    prefix = "/compat/modularauth/auth"

    async def _csrf(self) -> dict[str, str]:
        response = await self.call("GET", "/me")
        return _cookies(response)

    async def _mutate(
        self, path: str, credential: Credential | None, json: Any = None
    ) -> httpx.Response:
        csrf = await self._csrf()
        cookies = {**(credential.cookies if credential else {}), **csrf}
        return await self.call(
            "POST",
            path,
            Credential(cookies=cookies),
            json=json,
            headers={"x-csrf-token": csrf["_csrf"]},
        )

    async def register(self, email: str, password: str) -> None:
        _ok(await self._mutate("/register", None, {"email": email, "password": password}))

    async def login(self, email: str, password: str) -> Credential:
        response = _ok(
            await self._mutate("/login", None, {"identifier": email, "password": password})
        )
        return Credential(cookies={"sid": _cookies(response)["sid"]})

    async def me(self, credential: Credential) -> str | None:
        response = await self.call("GET", "/me", credential)
        return response.json()["data"]["user"]["email"] if response.status_code == 200 else None

    async def logout(self, credential: Credential) -> None:
        _ok(await self._mutate("/logout", credential))


class BrowsarySurface(Surface):
    """Browsary's token cookie (login with remember, so the cookie persists)."""

    name = "browsary"
    prefix = "/api/auth"

    async def register(self, email: str, password: str) -> None:
        body = {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "email": email,
            "password": password,
            "confirmPassword": password,
        }
        _ok(await self.call("POST", "/register", json=body))

    async def login(self, email: str, password: str) -> Credential:
        body = {"email": email, "password": password, "remember": True}
        response = _ok(await self.call("POST", "/login", json=body))
        if response.json().get("status") == "error":
            raise Refused(response.text)
        return Credential(cookies={"token": _cookies(response)["token"]})

    async def me(self, credential: Credential) -> str | None:
        auth = _ok(await self.call("GET", "", credential)).json()["auth"]
        return auth["info"]["email"] if auth else None

    async def logout(self, credential: Credential) -> None:
        _ok(await self.call("GET", "/logout", credential))


REST_SURFACES: tuple[type[Surface], ...] = (
    NodeAuthSurface,
    FluxKitSurface,
    AuthCoreSurface,
    ModularAuthSurface,
    BrowsarySurface,
)
ALL_SURFACES: tuple[type[Surface], ...] = (GraphQLSurface, *REST_SURFACES)

#: Every dialect mounted at once, at the prefixes the surfaces above use.
MOUNTS = (
    ("node-auth", "/auth"),
    ("fluxkit", "/compat/fluxkit/auth"),
    ("authcore", "/compat/authcore/api/auth"),
    ("modularauth", "/compat/modularauth/auth"),
    ("browsary", "/api/auth"),
)
