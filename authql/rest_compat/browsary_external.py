"""Browsary's external-provider routes: ``GET /external/providers``, ``GET /external``,
``GET`` and ``DELETE /external/{provider}``, ``GET /external/{provider}/init``,
``GET /external/{provider}/redirect`` and ``POST /external/register/{token}``.

Part of the Browsary dialect (``authql.rest_compat.browsary``): ``BrowsaryDialect``
inherits these handlers. Upstream: https://docs.browsary.com/api-reference/authentication
("External providers") and the ``@silyze/auth`` library (``handleExternalRedirect``
answers ``{status: 'linked' | 'login' | 'register', token}``, ``externalRegister``);
DIALECTS.md section 5. Resolvers: ``authql.resolvers.oauth`` (start_oauth, finish_oauth
with ``create_account=False``, linked_accounts, unlink_account, register_external) and
``authql.resolvers.meta`` (auth_providers). Providers are the configured ones
(``AUTHQL_OAUTH_PROVIDERS``, upstream's ``OPENID_PROVIDERS``); each needs
``<AUTHQL_PUBLIC_URL><prefix>/external/<provider>/redirect`` registered as a redirect URI.

Routes:
- GET /external/providers -> ``{status: 'ok', providers: [{name, displayName}]}``.
- GET /external (signed in) -> ``{status: 'ok', accounts: [account]}``, every identity linked
  to the account, oldest first; ``account`` is ``{provider, providerId, email, linkedAt,
  supported}``: ``providerId`` the provider's subject, ``supported`` false for a provider
  no longer configured (upstream's "unsupported provider records").
- GET /external/{provider} (signed in) -> ``{status: 'ok', account}`` (the oldest identity of
  that provider), or 404 when none is linked.
- DELETE /external/{provider} (signed in) -> ``{status: 'ok'}``: unlinks the account's
  identities of that provider (oauth.unlink_account, one by one); 404 when none is linked.
- GET /external/{provider}/init?returnUrl= -> 302 to the provider's authorization endpoint
  (authorization code, PKCE S256, state, nonce) and the HttpOnly flow-binding cookie
  ``openid_state`` (SameSite=Lax, Path ``<prefix>/external``, Max-Age 600). A signed-in
  caller (the ``token`` cookie or Bearer) links the identity to their account.
- GET /external/{provider}/redirect?code=&state= -> oauth.finish_oauth; every answer clears
  ``openid_state``. Then a 302:
  - ``linked`` (the flow was started signed in): to ``returnUrl`` or ``<public
    url>/dashboard``;
  - ``login`` (a known identity): the ``token`` cookie as ``/login`` sets it (a
    browser-session cookie: the flow carries no ``remember``), to ``returnUrl`` or
    ``/dashboard``. With 2FA on, the cookie holds the challenge instead (Max-Age 300) and
    the app sees ``GET /api/auth`` -> ``2fa_required`` and completes through
    ``POST /2fa/verify``, as after a password login (``2fa_setup`` likewise);
  - ``register`` (an unknown identity): to ``<returnUrl or <public url>/register>?token=
    <register token>``; the app's page posts the sign-up form to
    ``/external/register/{token}``.
- POST /external/register/{token} ``{firstName, lastName, email?, password?,
  confirmPassword?}`` -> ``{status, token}`` and the ``token`` cookie, as ``/register``
  with ``remember`` (oauth.register_external): the account is created, the identity
  linked, and signed in. ``email`` defaults to the provider's; it counts as verified only
  when the provider verified that same address (upstream's rule). ``password`` is
  optional (the identity is a way in); with it, ``confirmPassword`` must match. 400 for a
  bad, used or expired token, 409 for a taken email.

Redirect failures go to ``<public url>/login?error=<code>`` (no cookie but the cleared
binding): ``account_exists`` (an unknown identity whose email belongs to an account: never
linked silently; the owner signs in and then links it through ``init``),
``already_linked`` (when linking: the identity belongs to another account),
``email_not_verified`` (AUTHQL_REQUIRE_EMAIL_VERIFICATION and an unverified account),
``access_denied`` (the provider came back with ``error=`` or no code, e.g. the user
declined), ``invalid_state`` (unknown, used, expired or foreign state: another browser's
flow), ``external_auth_failed`` (the provider refused the code, or the id_token failed
verification), ``provider_error`` (the provider is unreachable), ``rate_limited``. An
unconfigured provider is 404 on every route.

Deliberate deviations (security):
- Upstream keeps the PKCE verifier in the ``openid_code`` cookie and sends no ``state`` to
  providers that support PKCE. authql keeps the verifier, a random single-use ten-minute
  state and the nonce server-side, and binds the flow to the browser with the
  ``openid_state`` cookie (a random secret whose digest the state record holds);
  ``openid_code`` is never set. The id_token's signature, issuer, audience, expiry and
  nonce are verified (upstream reads the userinfo endpoint).
- Upstream links whenever a JWT is present at the redirect; here the decision is taken at
  ``init`` (a signed-in caller) and recorded with the state, so a session that appears or
  changes during the flow cannot receive someone's identity.
- The register token is authql's: random, single use, fifteen minutes, stored as a digest,
  and it names the identity the provider vouched for (upstream: a JWT valid 360 days
  carrying the userinfo). It travels in the redirect URL, which is acceptable because it
  can only create an account for that identity, once, soon; it is no session.
- ``returnUrl`` must be a path on the public URL (whose origin AUTHQL_ALLOWED_REDIRECTS
  must list: the default) or listed there (exact URL or origin), else 400 before any
  redirect. Access tokens never appear in a
  redirect URL.
- Unlinking the last way to sign in (no password and no other identity) is refused (400).
- Over https the binding cookie is ``__Host-openid_state`` with Path ``/`` (a sibling
  subdomain cannot plant a binding of its own: login CSRF).

[inferred] choices: the response shapes of the providers, list, account and unlink routes;
the default pages ``/dashboard`` (documented), ``/register`` and ``/login?error=``; the
error codes; ``remember`` is not offered by OAuth sign-ins.
"""

from __future__ import annotations

import abc
import datetime as dt
from typing import Any
from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response

from authql.errors import (
    AuthError,
    Conflict,
    ErrorCode,
    InvalidToken,
    NotFound,
    OAuthConflict,
    ProviderError,
    RateLimited,
    StateInvalid,
    ValidationFailed,
)
from authql.resolvers import meta, oauth
from authql.resolvers.oauth import LinkedAccountView
from authql.resolvers.outcomes import AuthOutcome
from authql.rest_compat._base import (
    Dialect,
    DialectRequest,
    Endpoint,
    clear_cookie,
    json_response,
    set_cookie,
)

#: The JWT cookie (Browsary's only credential).
COOKIE = "token"
BINDING_COOKIE = "openid_state"
DASHBOARD_PAGE = "/dashboard"
REGISTER_PAGE = "/register"
ERROR_PAGE = "/login"


class ProviderDeclined(AuthError):
    """The provider came back without a code (``error=access_denied`` and the like)."""


def _redirect(url: str) -> Response:
    response = RedirectResponse(url, status_code=302)
    response.headers["cache-control"] = "no-store"
    return response


def _with_query(url: str, **params: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _failure(error: AuthError) -> str:
    """The ``error=`` code of a redirect that failed."""
    if isinstance(error, OAuthConflict):
        return "account_exists"
    if isinstance(error, Conflict):
        return "already_linked"
    if isinstance(error, ProviderDeclined):
        return "access_denied"
    if isinstance(error, InvalidToken):
        state = isinstance(error, StateInvalid)
        return "invalid_state" if state else "external_auth_failed"
    if isinstance(error, ProviderError):
        return "provider_error"
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, ValidationFailed):
        return "email_required"
    return "external_auth_failed"


class BrowsaryExternalRoutes(Dialect):
    """The external-provider part of the Browsary dialect."""

    @abc.abstractmethod
    def _credential(self, outcome: AuthOutcome) -> tuple[str, int | None] | None:
        """The ``token`` cookie (value, max-age) an outcome sets: the session's JWT, or a
        pending challenge; None when the outcome signs nobody in."""

    @abc.abstractmethod
    def _signed_in(self, outcome: AuthOutcome, *, cookie: bool = True) -> Response:
        """``{status, token}`` and the cookie, as after ``/login``."""

    def external_endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "GET",
                "/external/providers",
                self.external_providers,
                "The configured external providers",
            ),
            Endpoint(
                "GET",
                "/external",
                self.external_accounts,
                "The provider accounts linked to the signed-in account",
                authenticated=True,
            ),
            Endpoint(
                "POST",
                "/external/register/{token}",
                self.external_register,
                "Create the account for an external identity (the redirect's register token) "
                "and sign in",
                body={
                    "firstName": "string",
                    "lastName": "string",
                    "email": "string",
                    "password": "string",
                    "confirmPassword": "string",
                },
                required=("firstName", "lastName"),
            ),
            Endpoint(
                "GET",
                "/external/{provider}/init",
                self.external_init,
                "302 to the provider (signed in: link the identity to this account)",
                query={"returnUrl": "string"},
                status=302,
            ),
            Endpoint(
                "GET",
                "/external/{provider}/redirect",
                self.external_redirect,
                "The provider's redirect back: link, sign in, or 302 to the register page with "
                "a register token",
                query={"code": "string", "state": "string"},
                status=302,
            ),
            Endpoint(
                "GET",
                "/external/{provider}",
                self.external_account,
                "The signed-in account's identity at one provider",
                authenticated=True,
            ),
            Endpoint(
                "DELETE",
                "/external/{provider}",
                self.external_unlink,
                "Unlink a provider (not the last way to sign in)",
                authenticated=True,
            ),
        ]

    # --- URLs and cookies ----------------------------------------------------------------------

    def _public(self, path: str) -> str:
        return self.settings.public_url.rstrip("/") + path

    def _binding_cookie(self) -> tuple[str, str]:
        """(name, path): path-scoped over http, ``__Host-`` prefixed over https."""
        if self.settings.secure_cookies:
            return f"__Host-{BINDING_COOKIE}", "/"
        return BINDING_COOKIE, self.url("/external")

    def _return_url(self, raw: str | None) -> str | None:
        """A path becomes a URL on the public URL; the resolver checks it (and anything
        else) against AUTHQL_ALLOWED_REDIRECTS."""
        if (
            raw
            and raw.startswith("/")
            and not raw.startswith("//")
            and "\\" not in raw
            and raw.isprintable()
        ):
            return self._public(raw)
        return raw or None

    def _account(self, account: LinkedAccountView, configured: set[str]) -> dict[str, Any]:
        return {
            "provider": account.provider,
            "providerId": account.account_id,
            "email": account.email,
            "linkedAt": _iso(account.linked_at),
            "supported": account.provider in configured,
        }

    async def _linked(self, request: DialectRequest, provider: str) -> list[LinkedAccountView]:
        """The caller's identities at ``provider``; 401 signed out, 404 when none."""
        principal = request.context.require_principal()
        accounts = await oauth.linked_accounts(principal.user.id)
        mine = [account for account in accounts if account.provider == provider]
        if not mine:
            raise NotFound("No account of this provider is linked.")
        return mine

    def _configured(self, request: DialectRequest) -> dict[str, str]:
        """Configured provider name -> display name."""
        views = meta.auth_providers(request.context)
        return {view.id: view.name for view in views if view.kind == "oauth"}

    # --- handlers ------------------------------------------------------------------------------

    async def external_providers(self, request: DialectRequest) -> Response:
        providers = [
            {"name": name, "displayName": display}
            for name, display in self._configured(request).items()
        ]
        return json_response({"status": "ok", "providers": providers})

    async def external_accounts(self, request: DialectRequest) -> Response:
        principal = request.context.require_principal()
        configured = set(self._configured(request))
        accounts = await oauth.linked_accounts(principal.user.id)
        listed = [self._account(account, configured) for account in accounts]
        return json_response({"status": "ok", "accounts": listed})

    async def external_account(self, request: DialectRequest) -> Response:
        mine = await self._linked(request, request.path("provider"))
        account = self._account(mine[0], set(self._configured(request)))
        return json_response({"status": "ok", "account": account})

    async def external_unlink(self, request: DialectRequest) -> Response:
        for account in await self._linked(request, request.path("provider")):
            await oauth.unlink_account(
                request.context, provider=account.provider, account_id=account.account_id
            )
        return json_response({"status": "ok"})

    async def external_init(self, request: DialectRequest) -> Response:
        provider, context = request.path("provider"), request.context
        started = await oauth.start_oauth(
            context,
            provider=provider,
            redirect_uri=self._public(self.url(f"/external/{provider}/redirect")),
            link=context.principal is not None,
            return_url=self._return_url(request.query("returnUrl")),
            trusted_redirect=True,
        )
        response = _redirect(started.authorization_url)
        name, path = self._binding_cookie()
        set_cookie(
            response, self.settings, name, started.binding, max_age=oauth.STATE_TTL, path=path
        )
        return response

    async def external_redirect(self, request: DialectRequest) -> Response:
        provider = request.path("provider")
        try:
            response = await self._finish(request, provider)
        except AuthError as error:
            if error.code is ErrorCode.NOT_FOUND:
                response = self.error_response(error)
            else:
                response = _redirect(_with_query(self._public(ERROR_PAGE), error=_failure(error)))
        name, path = self._binding_cookie()
        clear_cookie(response, self.settings, name, path=path)
        return response

    async def _finish(self, request: DialectRequest, provider: str) -> Response:
        context = request.context
        code = request.query("code")
        if request.query("error") or not code:
            oauth.provider_client(context, provider)  # an unknown provider stays a 404
            raise ProviderDeclined("The provider did not grant access.")
        name, _ = self._binding_cookie()
        finished = await oauth.finish_oauth(
            context,
            provider=provider,
            code=code,
            state=request.query("state") or "",
            binding=request.request.cookies.get(name),
            create_account=False,
        )
        if finished.result == "register":
            assert finished.register_token is not None
            page = finished.return_url or self._public(REGISTER_PAGE)
            return _redirect(_with_query(page, token=finished.register_token))
        target = finished.return_url or self._public(DASHBOARD_PAGE)
        if finished.result == "linked":
            return _redirect(target)
        credential = self._credential(finished.outcome)
        if credential is None:  # the address must be verified first
            return _redirect(_with_query(self._public(ERROR_PAGE), error="email_not_verified"))
        token, max_age = credential
        response = _redirect(target)
        set_cookie(response, self.settings, COOKIE, token, max_age=max_age)
        return response

    async def external_register(self, request: DialectRequest) -> Response:
        first_name = await request.require("firstName")
        last_name = await request.require("lastName")
        email = await request.string("email", required=False)
        password = await request.string("password", required=False)
        confirm = await request.string("confirmPassword", required=False)
        if (password or confirm) and confirm != password:
            raise ValidationFailed(
                "confirmPassword must match password.",
                fields={"confirmPassword": "Does not match password."},
            )
        outcome = await oauth.register_external(
            request.context,
            token=request.path("token"),
            email=email or None,
            password=password or None,
            first_name=first_name,
            last_name=last_name,
        )
        return self._signed_in(outcome)
