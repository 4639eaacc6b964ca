"""AuthCore's NextAuth-style OAuth routes: the configured providers in ``GET /providers``,
``POST /signin/{provider}`` and ``GET /callback/{provider}``.

Part of the AuthCore dialect (``authql.rest_compat.authcore``): ``AuthCoreDialect``
inherits these handlers. Upstream: AuthCore signs in through NextAuth (DIALECTS.md section
3), whose OAuth providers use these routes (next-auth v4 ``core/routes/signin.ts`` and
``callback.ts``): ``POST /signin/:provider`` (with the CSRF token) redirects to the
provider, ``GET /callback/:provider`` sets the session cookie and redirects to the
callbackUrl, and failures go to NextAuth's error page ``<prefix>/error?error=<Code>``.
Resolvers: ``authql.resolvers.oauth`` (start_oauth, finish_oauth) and
``authql.resolvers.meta`` (auth_providers, through ``GET /providers``). Providers are the
configured ones (``AUTHQL_OAUTH_PROVIDERS``); each needs
``<AUTHQL_PUBLIC_URL><prefix>/callback/<provider>`` registered as a redirect URI.

Routes:
- GET /providers -> NextAuth's map: besides ``credentials``, ``{<name>: {id, name, type:
  'oauth', signinUrl: '<prefix>/signin/<name>', callbackUrl: '<prefix>/callback/<name>'}}``
  for each configured provider (``name``: its display name).
- POST /signin/{provider} ``{csrfToken, callbackUrl?, json?}`` (the CSRF check of
  ``signin/credentials``; spends ``authcore_auth``) -> 302 to the provider's authorization
  endpoint (authorization code, PKCE S256, state, nonce), or ``{url}`` for JSON callers
  (``application/json`` body or ``json=true``), and the HttpOnly flow-binding cookie
  ``authcore.state`` (SameSite=Lax, Path ``<prefix>/callback``, Max-Age 600). A signed-in
  caller (the session cookie) links the identity to their account instead, as NextAuth
  does. An unconfigured provider is 404 ``NOT_FOUND``; a provider that cannot be reached
  navigates to ``error=OAuthSignin`` (JSON: ``{url}`` with 500).
- GET /callback/{provider}?code=&state= -> oauth.finish_oauth with the binding cookie, which
  every answer clears. Sign-in, sign-up (an unknown identity creates an account, its email
  verified only if the provider says so) and linking: the session cookie
  ``authcore.session-token`` as ``signin/credentials`` sets it (not when linking: the
  session stays) and 302 to the callbackUrl, by default the public URL.

Failures (302 to ``<prefix>/error?error=<Code>``, no session cookie):
- ``OAuthAccountNotLinked`` (NextAuth's code for exactly this): the identity is unknown but
  its email belongs to an account, or, when linking, the identity belongs to another
  account. Nothing is linked: the owner signs in (password, magic link) and then signs in
  with the provider to link it.
- ``TwoFactorRequired``: the account has 2FA on. AuthCore's one-request sign-in takes the
  code with the password (``signin/credentials``); its flow has no route that takes a
  code after a redirect, so an OAuth sign-in cannot complete the challenge here. Accounts
  with 2FA sign in on this surface with password + code, or use a surface with a challenge
  route (GraphQL ``verifyTwoFactor``, node-auth ``/2fa/verify``, Browsary
  ``/2fa/verify``) after OAuth. ``TwoFactorSetupRequired`` (AUTHQL_REQUIRE_TWO_FACTOR, no
  factor yet) sets the setup cookie as ``signin/credentials`` does.
- ``EmailNotVerified``: AUTHQL_REQUIRE_EMAIL_VERIFICATION and the provider did not verify
  the address (the account exists, unverified).
- ``OAuthCreateAccount``: the provider shared no email address.
- ``OAuthCallback``: anything else: unknown, used, expired or foreign state (another
  browser's flow), a code or id_token the provider or the checks refuse, the user
  declining at the provider (``error=``), the provider unreachable, rate limits.
- An unconfigured provider is 404 ``NOT_FOUND`` in the envelope.

Deliberate deviations (security):
- The state is authql's: random, single use, ten minutes, stored server-side and bound to
  the browser that started the flow by the binding cookie; the PKCE verifier and nonce
  never leave the server (NextAuth keeps them in the ``state``, ``pkce.code_verifier`` and
  ``nonce`` cookies). The id_token's signature, issuer, audience, expiry and nonce are
  verified.
- Identities are keyed by (provider, subject), never by email: with NextAuth's
  ``allowDangerousEmailAccountLinking`` an identity can join the account with its email;
  here never (``OAuthAccountNotLinked``), verified by the provider or not.
- ``callbackUrl`` must pass this dialect's rule (a relative path, the public URL's origin,
  or an AUTHQL_ALLOWED_REDIRECTS entry or origin) and the resolver's AUTHQL_ALLOWED_REDIRECTS
  check (a relative path becomes a URL on the public URL, whose origin is allowed by
  default); otherwise 400 ``VALIDATION_ERROR`` (``fields.callbackUrl``) before any redirect,
  as ``POST /magic-link`` does (NextAuth silently replaces it): the flow leaves the site,
  so a refused URL is reported, not swapped.
- The session cookie never appears in a redirect URL; callback failures say only the
  NextAuth code.
- Over https the binding cookie is ``__Host-authcore.state`` with Path ``/`` (a sibling
  subdomain cannot plant a binding of its own: login CSRF).

[inferred] choices:
- ``POST /signin/{provider}`` shares the credentials sign-in's ``authcore_auth`` limit (5 /
  15 min / ip); the callback has no dialect limit (authql's own per-ip budget applies).
- ``GET /callback/credentials`` is an unknown provider (404); ``/signin/credentials`` stays
  the credentials sign-in.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any

from starlette.responses import RedirectResponse, Response

from authql.errors import (
    AuthError,
    Conflict,
    ErrorCode,
    InvalidToken,
    ProviderError,
    ValidationFailed,
)
from authql.resolvers import oauth
from authql.resolvers.meta import ProviderView
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.rest_compat._base import Dialect, DialectRequest, Endpoint, clear_cookie, set_cookie

BINDING_COOKIE = "authcore.state"


def _redirect(url: str) -> Response:
    response = RedirectResponse(url, status_code=302)
    response.headers["cache-control"] = "no-store"
    return response


class AuthCoreOAuthRoutes(Dialect):
    """The OAuth part of the AuthCore dialect."""

    @abc.abstractmethod
    def _navigate(self, url: str, as_json: bool, status: int) -> Response:
        """NextAuth's answer: ``{url}`` for fetch callers, a 302 for form posts."""

    @abc.abstractmethod
    async def _wants_json(self, request: DialectRequest) -> bool:
        """Whether the caller posted JSON (or ``json=true``)."""

    @abc.abstractmethod
    def _checked_callback(self, raw: str | None) -> str | None:
        """``raw`` when it is a safe target, None when absent, else VALIDATION_ERROR."""

    @abc.abstractmethod
    def _setup_required(self, outcome: AuthOutcome, as_json: bool) -> Response:
        """The ``TwoFactorSetupRequired`` answer with the setup cookie."""

    @abc.abstractmethod
    def _set_session_cookie(self, response: Response, session_token: str) -> None:
        """The ``authcore.session-token`` cookie of a new session."""

    def oauth_endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "POST",
                "/signin/{provider}",
                self.oauth_sign_in,
                "NextAuth OAuth sign-in: 302 (or {url}) to the provider; a signed-in caller "
                "links the identity",
                body={"csrfToken": "string", "callbackUrl": "string", "json": "boolean"},
                required=("csrfToken",),
                status=302,
                rate_limit="authcore_auth",
            ),
            Endpoint(
                "GET",
                "/callback/{provider}",
                self.oauth_callback,
                "The provider's redirect back: session cookie and 302 to the callbackUrl, or "
                "302 to <prefix>/error?error=<Code>",
                query={"code": "string", "state": "string"},
                status=302,
            ),
        ]

    def oauth_providers(self, views: Iterable[ProviderView]) -> dict[str, Any]:
        """NextAuth's provider entries for the OAuth providers among ``views``
        (meta.auth_providers)."""
        return {
            view.id: {
                "id": view.id,
                "name": view.name,
                "type": "oauth",
                "signinUrl": self.url(f"/signin/{view.id}"),
                "callbackUrl": self.url(f"/callback/{view.id}"),
            }
            for view in views
            if view.kind == "oauth"
        }

    def _binding_cookie(self) -> tuple[str, str]:
        """(name, path): path-scoped over http, ``__Host-`` prefixed over https."""
        if self.settings.secure_cookies:
            return f"__Host-{BINDING_COOKIE}", "/"
        return BINDING_COOKIE, self.url("/callback")

    def _public(self, path: str) -> str:
        return self.settings.public_url.rstrip("/") + path

    def _error_page(self, code: str) -> Response:
        return _redirect(self.url(f"/error?error={code}"))

    # --- handlers ------------------------------------------------------------------------------

    async def oauth_sign_in(self, request: DialectRequest) -> Response:
        provider = request.path("provider")
        as_json = await self._wants_json(request)
        callback = self._checked_callback(await request.string("callbackUrl", required=False))
        if callback and callback.startswith("/"):
            callback = self._public(callback)
        try:
            started = await oauth.start_oauth(
                request.context,
                provider=provider,
                redirect_uri=self._public(self.url(f"/callback/{provider}")),
                link=request.context.principal is not None,
                return_url=callback,
                trusted_redirect=True,
            )
        except ValidationFailed:  # only the return URL is checked (our redirect is trusted)
            raise ValidationFailed(
                "callbackUrl not allowed.", fields={"callbackUrl": "Not an allowed URL."}
            ) from None
        except ProviderError:
            return self._navigate(self.url("/error?error=OAuthSignin"), as_json, 500)
        response = self._navigate(started.authorization_url, as_json, 200)
        name, path = self._binding_cookie()
        set_cookie(
            response, self.settings, name, started.binding, max_age=oauth.STATE_TTL, path=path
        )
        return response

    async def oauth_callback(self, request: DialectRequest) -> Response:
        provider = request.path("provider")
        try:
            response = await self._finish(request, provider)
        except Conflict:  # OAuthConflict (email of an account), or linked to another one
            response = self._error_page("OAuthAccountNotLinked")
        except ValidationFailed:  # the provider shared no email address
            response = self._error_page("OAuthCreateAccount")
        except AuthError as error:
            if error.code is ErrorCode.NOT_FOUND:
                response = self.error_response(error)
            else:
                response = self._error_page("OAuthCallback")
        name, path = self._binding_cookie()
        clear_cookie(response, self.settings, name, path=path)
        return response

    async def _finish(self, request: DialectRequest, provider: str) -> Response:
        context = request.context
        code = request.query("code")
        if request.query("error") or not code:
            oauth.provider_client(context, provider)  # an unknown provider stays a 404
            raise InvalidToken("The provider did not grant access.")
        name, _ = self._binding_cookie()
        finished = await oauth.finish_oauth(
            context,
            provider=provider,
            code=code,
            state=request.query("state") or "",
            binding=request.request.cookies.get(name),
        )
        outcome = finished.outcome
        target = finished.return_url or self.settings.public_url
        if finished.result == "linked":
            return _redirect(target)
        if outcome.status is AuthStatus.TWO_FACTOR_SETUP_REQUIRED:
            return self._setup_required(outcome, False)
        if outcome.status is AuthStatus.TWO_FACTOR_REQUIRED:
            return self._error_page("TwoFactorRequired")
        if outcome.status is AuthStatus.EMAIL_NOT_VERIFIED:
            return self._error_page("EmailNotVerified")
        assert outcome.status is AuthStatus.OK and outcome.session_token is not None
        response = _redirect(target)
        self._set_session_cookie(response, outcome.session_token)
        return response
