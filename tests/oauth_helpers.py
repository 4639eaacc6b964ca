"""Helpers for OAuth tests against the real provider (``tests.oidc_provider``) and the GitHub
stand-in (``tests.github_standin``): provider settings, a browser that holds the app's and
the provider's cookies in one jar, and the GraphQL flow startOAuth -> provider ->
finishOAuth.

    from tests.oauth_helpers import acme_settings, make_browser_fixture  # noqa: F401
    from tests.oidc_provider import oidc_fixture  # noqa: F401

    async def test_x(oidc, make_client, make_browser) -> None:
        client = make_client(**acme_settings(oidc))
        browser = make_browser(client.app)            # one person's browser
        flow = await browser.sign_in_with("acme", login="alice")
        payload = flow.payload                        # finishOAuth's AuthPayload

A browser keeps its provider session: the first ``authorize`` in it signs in with
``login=...``; later ones in the same browser pass ``login=None`` (the provider skips its
login form). Use a fresh browser for another person, or another device.

Dialect routes use the same browser over plain HTTP (the app's cookies stay in its jar)::

    start = await browser.http.get("/auth/oauth/acme")           # 302 to the provider
    callback = await browser.authorize(start.headers["location"], login="alice")
    done = await browser.http.get(callback.url)                   # the app's callback route

GitHub through ``tests.github_standin``: ``make_client(oauth_providers=(standin.provider(),),
...)`` and ``make_browser(app, authorizer=standin_authorize)``.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import pytest
from starlette.applications import Starlette

from authql.settings import OAuthProviderConfig
from tests.oidc_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    Callback,
    OidcProvider,
    callback_params,
)
from tests.oidc_provider import authorize as oidc_authorize
from tests.support import GraphQLClient, GraphQLResult

ACME = "acme"
#: The address the tests' browsers connect from (as in ``make_client``).
BROWSER_ADDRESS = ("203.0.113.7", 50000)
#: The cookie binding a flow to its browser (``authql.schema.mutation.OAUTH_BINDING_COOKIE``).
BINDING_COOKIE = "authql_oauth"

OAUTH_PAYLOAD = """
status accessToken refreshToken tokenType expiresIn challengeToken twoFactorMethods
user {
  id email emailVerified name hasPassword twoFactorEnabled
  linkedAccounts { provider accountId email linkedAt }
}
session { id current method }
"""
START_OAUTH = """
mutation($provider: String!, $redirectUri: String, $link: Boolean) {
  startOAuth(provider: $provider, redirectUri: $redirectUri, link: $link)
}
"""
FINISH_OAUTH = f"""
mutation($provider: String!, $code: String!, $state: String!) {{
  finishOAuth(provider: $provider, code: $code, state: $state) {{ {OAUTH_PAYLOAD} }}
}}
"""
UNLINK_ACCOUNT = """
mutation($provider: String!, $accountId: String!) {
  unlinkAccount(provider: $provider, accountId: $accountId)
}
"""
LINKED_ACCOUNTS = "query { me { id linkedAccounts { provider accountId email linkedAt } } }"
AUTH_PROVIDERS = "query { authProviders { id kind name authorizeUrl } }"


# --- settings ------------------------------------------------------------------------------


def acme_provider(
    oidc: OidcProvider,
    *,
    name: str = ACME,
    client_id: str = CLIENT_ID,
    client_secret: str = CLIENT_SECRET,
    **fields: Any,
) -> OAuthProviderConfig:
    """A generic OIDC provider entry for the test provider, found by discovery."""
    return OAuthProviderConfig(
        name=name,
        client_id=client_id,
        client_secret=client_secret,
        discovery_url=oidc.discovery_url,
        **fields,
    )


def acme_settings(
    oidc: OidcProvider,
    *extra_providers: OAuthProviderConfig,
    allowed_redirects: Iterable[str] = (REDIRECT_URI,),
    **overrides: Any,
) -> dict[str, Any]:
    """``make_client``/``make_app`` overrides: ``acme`` (plus ``extra_providers``), and the
    SPA callback page ``http://testserver/oauth/callback`` as the allowed redirect."""
    return {
        "oauth_providers": (acme_provider(oidc), *extra_providers),
        "allowed_redirects": tuple(allowed_redirects),
        **overrides,
    }


# --- the browser ---------------------------------------------------------------------------


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for all test browsers (building one per client costs ~0.1 s)."""
    return ssl.create_default_context()


class Authorizer(Protocol):
    """Plays the user at a provider (``tests.oidc_provider.authorize``, or the GitHub
    stand-in's ``tests.github_standin`` flavour)."""

    def __call__(
        self, browser: httpx.AsyncClient, authorize_url: str, *, login: str | None
    ) -> Awaitable[httpx.Response]: ...


async def standin_authorize(
    browser: httpx.AsyncClient, authorize_url: str, *, login: str | None
) -> httpx.Response:
    """The GitHub stand-in's authorize page: ``login`` approves at once (``None``: whoever
    the stand-in has ``signed_in``). Returns its redirect back to the app, not followed."""
    url = httpx.URL(authorize_url)
    if login is not None:
        url = url.copy_merge_params({"login": login})
    response = await browser.get(url, follow_redirects=False)
    assert response.status_code == 302, (response.status_code, response.text)
    return response


@dataclass(frozen=True)
class OAuthFlow:
    """One run through the flow: where startOAuth sent the browser, what the provider sent
    back, and finishOAuth's answer (``result``; ``payload`` when it succeeded)."""

    authorization_url: str
    callback: Callback
    result: GraphQLResult

    @property
    def payload(self) -> dict[str, Any]:
        return self.result.data["finishOAuth"]  # type: ignore[no-any-return]

    @property
    def error_code(self) -> str | None:
        return self.result.error_code


class Browser(GraphQLClient):
    """One person's browser: the app in-process at ``http://testserver``, providers over
    the network, one cookie jar for both (so the binding cookie startOAuth sets goes back
    with finishOAuth, and the provider remembers who signed in)."""

    def __init__(self, app: Starlette, *, authorizer: Authorizer = oidc_authorize) -> None:
        http = httpx.AsyncClient(
            mounts={
                "http://testserver": httpx.ASGITransport(app=app, client=BROWSER_ADDRESS),
            },
            base_url="http://testserver",
            timeout=15,
            verify=_tls(),
        )
        super().__init__(http, app)
        self.authorizer = authorizer

    @property
    def binding(self) -> str | None:
        """The flow-binding cookie the app set on this browser, if any."""
        return self.http.cookies.get(BINDING_COOKIE)

    async def start_oauth(
        self,
        provider: str = ACME,
        *,
        redirect_uri: str | None = REDIRECT_URI,
        link: bool | None = None,
        token: str | None = None,
    ) -> GraphQLResult:
        """startOAuth as this browser (``token``: signed in, e.g. for ``link``)."""
        variables: dict[str, Any] = {"provider": provider, "redirectUri": redirect_uri}
        if link is not None:
            variables["link"] = link
        return await self.gql(START_OAUTH, variables, token=token)

    async def authorize(self, authorization_url: str, *, login: str | None) -> Callback:
        """Go to the provider, sign in as ``login`` and approve; what it sends back."""
        return callback_params(await self.authorizer(self.http, authorization_url, login=login))

    async def finish_oauth(
        self,
        provider: str = ACME,
        callback: Callback | None = None,
        *,
        code: str | None = None,
        state: str | None = None,
    ) -> GraphQLResult:
        """finishOAuth with the callback's code and state (or explicit ones)."""
        code = code if code is not None else callback.code if callback else None
        state = state if state is not None else callback.state if callback else None
        assert code is not None and state is not None, callback
        return await self.gql(FINISH_OAUTH, {"provider": provider, "code": code, "state": state})

    async def begin(
        self,
        provider: str = ACME,
        *,
        login: str | None,
        redirect_uri: str | None = REDIRECT_URI,
        link: bool | None = None,
        token: str | None = None,
    ) -> tuple[str, Callback]:
        """startOAuth and the provider's part: ``(authorization_url, callback)``."""
        started = await self.start_oauth(
            provider, redirect_uri=redirect_uri, link=link, token=token
        )
        url: str = started.data["startOAuth"]
        callback = await self.authorize(url, login=login)
        assert callback.error is None and callback.code and callback.state, callback
        return url, callback

    async def sign_in_with(
        self,
        provider: str = ACME,
        *,
        login: str | None,
        redirect_uri: str | None = REDIRECT_URI,
        link: bool | None = None,
        token: str | None = None,
    ) -> OAuthFlow:
        """The whole flow: startOAuth -> provider (as ``login``) -> finishOAuth."""
        url, callback = await self.begin(
            provider, login=login, redirect_uri=redirect_uri, link=link, token=token
        )
        return OAuthFlow(url, callback, await self.finish_oauth(provider, callback))

    async def linked_accounts(self, token: str) -> list[dict[str, Any]]:
        """``me.linkedAccounts`` for the signed-in account."""
        me = (await self.gql(LINKED_ACCOUNTS, token=token)).data["me"]
        assert me is not None, "not signed in"
        return me["linkedAccounts"]  # type: ignore[no-any-return]

    async def unlink(self, provider: str, account_id: str, *, token: str | None) -> GraphQLResult:
        return await self.gql(
            UNLINK_ACCOUNT, {"provider": provider, "accountId": account_id}, token=token
        )

    async def aclose(self) -> None:
        await self.http.aclose()


def open_browser(app: Starlette, *, authorizer: Authorizer = oidc_authorize) -> Browser:
    """A new browser for ``app`` (close it with ``await browser.aclose()``; the
    ``make_browser`` fixture does that for you)."""
    return Browser(app, authorizer=authorizer)


@pytest.fixture(name="make_browser")
async def make_browser_fixture() -> AsyncIterator[Callable[..., Browser]]:
    """Browsers for apps (``make_browser(client.app)``; ``authorizer=standin_authorize``
    for the GitHub stand-in), closed after the test."""
    opened: list[Browser] = []

    def make(app: Starlette, *, authorizer: Authorizer = oidc_authorize) -> Browser:
        browser = open_browser(app, authorizer=authorizer)
        opened.append(browser)
        return browser

    yield make
    for browser in opened:
        await browser.aclose()
