"""ModularAuth-Kit's Google sign-in routes, for every configured provider:
``GET /{provider}`` and ``GET /{provider}/callback``.

Part of the ModularAuth-Kit dialect (``authql.rest_compat.modularauth``):
``ModularAuthDialect`` inherits these handlers. Upstream: ``docs/api/oauth-endpoints.md`` and
``src/auth/http/controllers/oauth.controller.ts`` of github.com/IamAshrafee/ModularAuth-Kit
(Google only, at ``/auth/google``). Resolvers: ``authql.resolvers.oauth`` (start_oauth,
finish_oauth). Every provider of ``AUTHQL_OAUTH_PROVIDERS`` gets ``GET /<name>`` and
``GET /<name>/callback`` (so ``google`` keeps upstream's paths), except one named like a path
of this dialect (``me``, ``sessions``, ``login``, ...), which is not served here; an
unconfigured provider is 404. Register ``<AUTHQL_PUBLIC_URL><prefix>/<name>/callback`` at
the provider. Every redirect below is absolute on ``AUTHQL_PUBLIC_URL`` (upstream's are
relative to the API's host).

Routes:
- GET /{provider} -> 302 to the provider (authorization code, PKCE S256, state, nonce) and
  the HttpOnly flow-binding cookie ``oauth_state`` (upstream's name; SameSite=Lax, path
  ``<prefix>/<provider>``, Max-Age 600). Failures before the redirect answer in the error
  envelope: an unreachable provider 500 ``INTERNAL_ERROR`` (as upstream's ``handleError``),
  429 ``RATE_LIMITED``.
- GET /{provider}/callback?code=&state= -> the binding cookie is cleared on every answer.
  Sign-in or sign-up: ``Set-Cookie: sid`` as /login sets it and 302 ``/?oauth=success``.
  Errors 302 ``/?error=``: ``access_denied`` (the provider came back with any ``error=``),
  ``missing_oauth_params`` (no code or no state), ``oauth_state_expired`` (the state is
  unknown, used, expired, another provider's or another browser's, or the binding cookie
  is gone), ``oauth_failed`` (the code or id_token was refused, the provider is down, it
  shared no email, rate limited, ...).

Deliberate deviations (security):
- Upstream keeps the state and PKCE verifier in the ``oauth_state`` cookie itself and
  redirects the raw provider ``error`` value back. authql keeps state, verifier and nonce
  server-side (random, single use, ten minutes, bound to the browser through the cookie,
  which holds only a random binding secret) and checks the id_token's signature, issuer,
  audience, expiry and nonce; provider errors are reported as ``access_denied`` only.
- Upstream links a Google identity to the account with the same email. authql never links
  by email: an unknown identity whose email belongs to an account gets ``/?error=
  account_exists`` [inferred code] and no session; the owner links the provider while
  signed in over another surface (GraphQL ``startOAuth(link: true)``).
- Over https the binding cookie is ``__Host-oauth_state`` with path ``/``, so a sibling
  subdomain cannot plant a binding of its own (login CSRF).

[inferred] choices (upstream has no 2FA and no email-verification gate on OAuth):
- A second factor pending: no ``sid``, 302 ``/?oauth=2fa&challenge=<challengeToken>&
  methods=<m,...>`` (the lower-cased methods of /login's ``data.methods``), completed
  through POST /login/2fa. Under ``require_two_factor`` for an account without a factor:
  ``/?oauth=2fa_setup&challenge=..&methods=totp``, completed through /login/2fa/setup,
  /login/2fa/setup/verify and /login/2fa. The challenge is authql's opaque, single-use,
  five-minute token, never a session.
- With ``require_email_verification`` and an address the provider did not verify: the
  account exists, no ``sid``, 302 ``/?error=email_not_verified``.
"""

from __future__ import annotations

import abc
from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response

from authql.errors import AuthError, Conflict, InvalidToken, StateInvalid
from authql.resolvers import oauth
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.rest_compat._base import (
    Dialect,
    DialectRequest,
    Endpoint,
    clear_cookie,
    set_cookie,
)

BINDING_COOKIE = "oauth_state"
#: A pending second factor -> the ``oauth=`` value of its redirect.
_CHALLENGES = {
    AuthStatus.TWO_FACTOR_REQUIRED: "2fa",
    AuthStatus.TWO_FACTOR_SETUP_REQUIRED: "2fa_setup",
}


class ModularAuthOAuthRoutes(Dialect):
    """The provider sign-in part of the ModularAuth-Kit dialect."""

    @abc.abstractmethod
    def _set_session_cookie(self, response: Response, outcome: AuthOutcome) -> None:
        """``sid`` for a new session, as /login sets it."""

    def oauth_endpoints(self, fixed: list[Endpoint]) -> list[Endpoint]:
        """The provider routes, to list after ``fixed`` (whose names they never take)."""
        reserved = {endpoint.path.split("/")[1] for endpoint in fixed} | {"openapi.json"}
        return [
            endpoint
            for client in self.services.oauth.all()
            if client.name not in reserved
            for endpoint in self._provider_endpoints(client.name, client.display_name)
        ]

    def _provider_endpoints(self, provider: str, label: str) -> list[Endpoint]:
        async def start(request: DialectRequest) -> Response:
            return await self.oauth_start(request, provider)

        async def callback(request: DialectRequest) -> Response:
            return await self.oauth_callback(request, provider)

        label = label or provider
        return [
            Endpoint(
                "GET",
                f"/{provider}",
                start,
                f"Sign in with {label}: 302 to its consent page",
                status=302,
            ),
            Endpoint(
                "GET",
                f"/{provider}/callback",
                callback,
                f"{label}'s redirect back: sets sid and 302 /?oauth=success (or /?error=)",
                query={"code": "string", "state": "string"},
                status=302,
            ),
        ]

    # --- helpers -------------------------------------------------------------------------------

    def _binding_cookie(self, provider: str) -> tuple[str, str]:
        """(name, path): path-scoped to the provider's routes, ``__Host-`` over https."""
        if self.settings.secure_cookies:
            return f"__Host-{BINDING_COOKIE}", "/"
        return BINDING_COOKIE, self.url(f"/{provider}")

    def _home(self, **params: str) -> Response:
        """302 to ``<public url>/?<params>``."""
        url = f"{self.settings.public_url.rstrip('/')}/?{urlencode(params)}"
        response = RedirectResponse(url, status_code=302)
        response.headers["cache-control"] = "no-store"
        return response

    # --- handlers ------------------------------------------------------------------------------

    async def oauth_start(self, request: DialectRequest, provider: str) -> Response:
        public = self.settings.public_url.rstrip("/")
        started = await oauth.start_oauth(
            request.context,
            provider=provider,
            redirect_uri=public + self.url(f"/{provider}/callback"),
            trusted_redirect=True,
        )
        response = RedirectResponse(started.authorization_url, status_code=302)
        response.headers["cache-control"] = "no-store"
        name, path = self._binding_cookie(provider)
        set_cookie(
            response, self.settings, name, started.binding, max_age=oauth.STATE_TTL, path=path
        )
        return response

    async def oauth_callback(self, request: DialectRequest, provider: str) -> Response:
        try:
            response = await self._finish(request, provider)
        except Conflict:
            response = self._home(error="account_exists")
        except InvalidToken as error:
            expired = isinstance(error, StateInvalid)  # not the provider's answer
            response = self._home(error="oauth_state_expired" if expired else "oauth_failed")
        except AuthError:
            response = self._home(error="oauth_failed")
        name, path = self._binding_cookie(provider)
        clear_cookie(response, self.settings, name, path=path)
        return response

    async def _finish(self, request: DialectRequest, provider: str) -> Response:
        if request.query("error"):
            return self._home(error="access_denied")
        code, state = request.query("code"), request.query("state")
        if not code or not state:
            return self._home(error="missing_oauth_params")
        name, _ = self._binding_cookie(provider)
        finished = await oauth.finish_oauth(
            request.context,
            provider=provider,
            code=code,
            state=state,
            binding=request.request.cookies.get(name),
        )
        outcome = finished.outcome
        if outcome.status in _CHALLENGES and outcome.challenge_token:
            methods = ",".join(method.lower() for method in outcome.two_factor_methods or ())
            return self._home(
                oauth=_CHALLENGES[outcome.status],
                challenge=outcome.challenge_token,
                methods=methods,
            )
        if outcome.status is AuthStatus.EMAIL_NOT_VERIFIED:
            return self._home(error="email_not_verified")
        if outcome.status is not AuthStatus.OK or not outcome.session_token:
            raise AuthError()  # nothing else finishes a sign-in here
        response = self._home(oauth="success")
        self._set_session_cookie(response, outcome)
        return response
