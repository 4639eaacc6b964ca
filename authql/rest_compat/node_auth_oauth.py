"""node-auth's OAuth and account-linking routes: ``GET /oauth/{provider}``,
``GET /oauth/{provider}/callback``, ``GET /linked-accounts``,
``DELETE /linked-accounts/{provider}/{providerAccountId}``, ``POST /link-request`` and
``POST /link-verify``.

Part of the node-auth dialect (``authql.rest_compat.node_auth``): ``NodeAuthDialect``
inherits these handlers. Upstream: ``src/router/auth.router.ts`` of
github.com/nik2208/awesome-node-auth (the ``/oauth/google``, ``/oauth/github`` and
``oauthStrategies`` routes, ``handleOAuthLogin``, the linked-accounts routes) and DIALECTS.md
section 1. Resolvers: ``authql.resolvers.oauth`` (start_oauth, finish_oauth,
linked_accounts, unlink_account, request_link, verify_link). Providers are the configured ones
(``AUTHQL_OAUTH_PROVIDERS``: google, github and generic OIDC providers by name); each must
have ``<AUTHQL_PUBLIC_URL><prefix>/oauth/<provider>/callback`` registered as redirect URI.

Routes:
- GET /oauth/{provider}?return_path=&link= -> 302 to the provider (authorization code,
  PKCE S256, state and nonce; oauth.start_oauth) and the HttpOnly flow-binding cookie
  ``oauthBinding`` (SameSite=Lax, path ``<prefix>/oauth``, Max-Age 600). An unconfigured
  provider is 404 ``{error: '<Provider> OAuth not configured'}`` (``Google``, ``GitHub``,
  else the name title-cased), as is its callback.
- GET /oauth/{provider}/callback?code=&state= -> oauth.finish_oauth with the binding cookie,
  which every answer clears. Sign-in and sign-up: the ``accessToken``/``refreshToken``
  cookies exactly as ``/login`` sets them (plus ``csrf-token`` with CSRF on) and 302 to the
  return path, default ``<public url>/``. Second factor pending: 302
  ``<public url>/auth/2fa?tempToken=..&methods=..`` (upstream's shape; ``methods`` are the
  ``available2faMethods`` names, comma-separated), completed through ``/2fa/verify``.
  Conflict: 302 ``<public url><prefix>/account-conflict?provider=<p>&code=
  OAUTH_ACCOUNT_CONFLICT&email=<email>``, and the HttpOnly cookie ``oauthPendingLink``
  (path ``<prefix>/link-request``, Max-Age 900) naming the parked identity, for
  ``/link-request``.
- GET /linked-accounts -> 200 ``{linkedAccounts: [{provider, providerAccountId, email,
  linkedAt}]}`` (oauth.linked_accounts); 403 unauthenticated.
- DELETE /linked-accounts/{provider}/{providerAccountId} -> 200 ``{success: true}``
  (oauth.unlink_account); 404 ``{error: 'Linked account not found'}``.
- POST /link-request ``{email, provider?, emailLang?}`` (the browser holding
  ``oauthPendingLink``) -> 200 ``{success: true}`` (oauth.request_link): the owner of
  ``email`` gets a mail with ``<public url><prefix>/link-verify?token=`` (the operator's
  page POSTs the token, as upstream's ``buildUiLink``). 400 ``{error: 'email is required',
  code: 'EMAIL_REQUIRED'}``; without a live pending identity 401 ``{error: 'Authentication
  required or no pending link found', code: 'UNAUTHORIZED'}`` (upstream's words).
- POST /link-verify ``{token, loginAfterLinking?}`` -> 200 ``{success: true}``, or with
  ``loginAfterLinking`` a sign-in like ``/login`` (cookies, the bearer body with
  ``X-Auth-Strategy: bearer``, or the 2FA challenge) (oauth.verify_link). 400 ``{error:
  'token is required', code: 'TOKEN_REQUIRED'}``, 400 ``{error: 'Invalid account-link
  token', code: 'INVALID_LINK_TOKEN'}``, 400 ``{error: 'Account-link token has expired',
  code: 'LINK_TOKEN_EXPIRED'}``.

Deliberate deviations (security):
- Upstream's state is base64 JSON ``{nonce, origin, path}`` that nothing checks, and it
  uses no PKCE. authql's state is random, single use, ten minutes, stored server-side for
  this provider and bound to the browser that started the flow (the binding cookie); the
  id_token's signature, issuer, audience, expiry and nonce are verified. A callback with
  an unknown, used, expired or foreign state is refused (``INVALID_STATE``) and creates
  nothing.
- Identities are keyed by (provider, subject), never by email. Upstream's
  ``findOrCreateUser`` may attach a provider identity to the account with the same email;
  here an unknown identity whose email belongs to an account is never linked, verified by
  the provider or not: it gets the account-conflict redirect, and the owner signs in and
  links it (``?link=true``). Conflicts happen for every provider, not only with a
  pending-link store.
- ``return_path`` is a path on ``AUTHQL_PUBLIC_URL`` (one leading ``/``) or an absolute
  URL that ``AUTHQL_ALLOWED_REDIRECTS`` lists (exactly, or its origin); anything else
  (``//host``, other origins, other schemes) is 400 ``{error: 'return_path: Not an allowed
  return path.', code: 'VALIDATION_ERROR'}`` before any redirect. Upstream appends the path
  to an allow-listed site taken from ``Origin``/``Referer``. Paths need the public URL's
  origin in AUTHQL_ALLOWED_REDIRECTS (the default when the variable is unset).
- The 2FA redirect carries authql's challenge token: opaque, five minutes, single use,
  never an access token (upstream puts an access JWT in the URL). Access and refresh
  tokens never appear in a redirect URL, only in HttpOnly cookies.
- Over https the binding cookie is ``__Host-oauthBinding`` and the pending-link cookie
  ``__Host-oauthPendingLink``, both with path ``/`` (browsers refuse ``__Host-`` cookies on
  other paths; the prefix stops a sibling subdomain planting a binding or a pending
  identity of its own, which would allow login CSRF or linking a stranger's identity).
- Upstream's pending-link stash is keyed by email and provider, so anyone knowing both
  can use it; authql parks the identity under a random token that only the browser which
  met the conflict holds (the cookie), and ``/link-request`` needs it. The link mailed is
  single use and stored as a digest; an address without an account gets the same 200 and
  no mail (no enumeration).
- Unlinking the last way to sign in (no password, no other identity) is refused: 403
  ``{error: 'Set a password or link another account before unlinking this one', code:
  'PASSWORD_REQUIRED'}`` (upstream removes it).

[inferred] choices:
- ``?link=true`` (or ``1``/``yes``/``on``) by a signed-in caller (Bearer or the access
  cookie) starts a linking flow: the callback links the identity to that account, sets no
  cookie and redirects to the return path. Without a credential: 403 ``{error: 'No access
  token provided'}``; with a dead one: 403 ``{error: 'Invalid or expired access token'}``.
  An identity already linked to another account gets the account-conflict redirect
  without ``email``.
- Callback failures other than the conflict redirect a browser to ``<public
  url>/?error=<CODE>``; a client sending ``Accept: application/json`` (without
  ``text/html``) gets the JSON error instead (upstream always answers JSON). Codes: 400
  ``INVALID_STATE`` (``Invalid or expired OAuth state``), 401
  ``OAUTH_TOKEN_EXCHANGE_FAILED`` (upstream's code; the code was refused or the id_token
  failed verification), 400 ``OAUTH_PROVIDER_ERROR`` (the provider came back with
  ``error=`` or without a code, e.g. the user declined), 502 ``PROVIDER_ERROR`` (the
  provider is unreachable), 400 ``EMAIL_REQUIRED`` (the provider shared no email), 403
  ``EMAIL_NOT_VERIFIED`` (AUTHQL_REQUIRE_EMAIL_VERIFICATION and an unverified address from
  the provider: the account exists, unverified), 429 ``RATE_LIMITED``.
- With AUTHQL_REQUIRE_TWO_FACTOR and an account without a factor, the 2FA redirect adds
  ``code=2FA_SETUP_REQUIRED`` (``methods=totp``: what it can enrol); its tempToken enrols
  through ``/2fa/setup`` and ``/2fa/verify-setup``, then completes through ``/2fa/verify``.
- The account-conflict page is ``<public url><prefix>/account-conflict`` (upstream's
  ``buildUiLink``: site, API prefix, page; like this dialect's mail links). The 2FA page is
  ``<public url>/auth/2fa`` whatever the prefix (upstream hard-codes ``/auth/2fa``).
- The callback always sets cookies (``X-Auth-Strategy: bearer`` does not apply, as
  upstream). ``providerAccountId`` is the provider's subject (``sub``; GitHub's numeric
  id); ``email`` is null when the provider shared none; ``linkedAt`` is ISO 8601 UTC with
  milliseconds.
- ``/link-request`` links only the identity parked by a conflict. Upstream's signed-in
  variant (linking another email address as provider ``email``) is not offered: a
  signed-in caller without a pending identity gets the same 401; providers are linked with
  ``GET /oauth/{provider}?link=true``. ``provider`` is accepted and ignored (the pending
  identity names its provider), as is ``emailLang``. Upstream checks ``X-CSRF-Token`` on
  ``/link-request`` when CSRF is on; here the SameSite=Lax pending cookie (not sent on
  cross-site POSTs) protects it. The identity linked elsewhere meanwhile:
  ``/link-verify`` answers 409 ``{error: 'This account is already linked', code:
  'OAUTH_ACCOUNT_CONFLICT'}``.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response

from authql.errors import (
    AuthError,
    Conflict,
    EmailNotVerified,
    ErrorCode,
    Forbidden,
    InvalidToken,
    NotFound,
    OAuthConflict,
    StateInvalid,
    Unauthorized,
    ValidationFailed,
)
from authql.resolvers import oauth
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.rest_compat._base import (
    DialectRequest,
    Endpoint,
    clear_cookie,
    json_response,
    set_cookie,
)
from authql.rest_compat.node_auth_2fa import NodeAuthTwoFactorRoutes, available_methods
from authql.rest_compat.node_auth_mail import (
    BAD_ACCESS_TOKEN,
    NO_ACCESS_TOKEN,
    Said,
    cookie_name,
    iso,
    read_cookie,
)

BINDING_COOKIE = "oauthBinding"
PENDING_COOKIE = "oauthPendingLink"
NO_PENDING_LINK = "Authentication required or no pending link found"
TWO_FACTOR_PAGE = "/auth/2fa"
CONFLICT_PAGE = "/account-conflict"
_TRUE = frozenset({"1", "true", "yes", "on"})
_DISPLAY_NAMES = {"google": "Google", "github": "GitHub"}
_CHALLENGES = (AuthStatus.TWO_FACTOR_REQUIRED, AuthStatus.TWO_FACTOR_SETUP_REQUIRED)


@contextlib.contextmanager
def _link_token() -> Iterator[None]:
    """``/link-verify``'s refusals in upstream's words."""
    try:
        yield
    except InvalidToken as error:
        if error.expired:
            raise Said(400, "Account-link token has expired", "LINK_TOKEN_EXPIRED") from None
        raise Said(400, "Invalid account-link token", "INVALID_LINK_TOKEN") from None
    except Conflict:
        raise Said(
            409, "This account is already linked", "OAUTH_ACCOUNT_CONFLICT", code=ErrorCode.CONFLICT
        ) from None


@contextlib.contextmanager
def _configured(provider: str) -> Iterator[None]:
    """The resolver's NOT_FOUND for an unknown provider, in upstream's words."""
    try:
        yield
    except NotFound:
        name = _DISPLAY_NAMES.get(provider, provider.replace("-", " ").title())
        raise Said(404, f"{name} OAuth not configured", code=ErrorCode.NOT_FOUND) from None


def _callback_error(error: AuthError) -> AuthError:
    """A callback failure in node-auth's words where the route has its own."""
    if isinstance(error, InvalidToken):
        if isinstance(error, StateInvalid):
            return Said(400, "Invalid or expired OAuth state", "INVALID_STATE", code=error.code)
        message = error.message.rstrip(".")
        return Said(401, message, "OAUTH_TOKEN_EXCHANGE_FAILED", code=error.code)
    if isinstance(error, ValidationFailed) and "email" in error.fields:
        return Said(400, "The provider shared no email address", "EMAIL_REQUIRED")
    return error


def _redirect(url: str) -> Response:
    response = RedirectResponse(url, status_code=302)
    response.headers["cache-control"] = "no-store"
    return response


def _wants_json(request: DialectRequest) -> bool:
    accept = request.request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


class NodeAuthOAuthRoutes(NodeAuthTwoFactorRoutes):
    """The OAuth and linked-accounts part of the node-auth dialect."""

    @abc.abstractmethod
    def _set_token_cookies(self, response: Response, outcome: AuthOutcome) -> None:
        """The access and refresh cookies of a new session, as ``/login`` sets them."""

    def oauth_endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "GET",
                "/oauth/{provider}",
                self.oauth_start,
                "Sign in with a configured provider: 302 to it (link=true: link it to the "
                "signed-in account)",
                query={"return_path": "string", "link": "boolean"},
                status=302,
            ),
            Endpoint(
                "GET",
                "/oauth/{provider}/callback",
                self.oauth_callback,
                "The provider's redirect back: session cookies and 302 to the return path "
                "(or to the 2FA or account-conflict page)",
                query={"code": "string", "state": "string"},
                status=302,
            ),
            Endpoint(
                "GET",
                "/linked-accounts",
                self.list_linked_accounts,
                "The provider accounts linked to the signed-in account",
                authenticated=True,
            ),
            Endpoint(
                "DELETE",
                "/linked-accounts/{provider}/{providerAccountId}",
                self.unlink_account,
                "Unlink a provider account (not the last way to sign in)",
                authenticated=True,
            ),
            Endpoint(
                "POST",
                "/link-request",
                self.link_request,
                "Mail the owner of an account a link that links the identity parked by an "
                "account conflict (this browser's pending-link cookie)",
                body={"email": "string", "provider": "string", "emailLang": "string"},
                required=("email",),
            ),
            Endpoint(
                "POST",
                "/link-verify",
                self.link_verify,
                "Complete the link from the mailed token (loginAfterLinking: also sign in)",
                body={"token": "string", "loginAfterLinking": "boolean"},
                required=("token",),
            ),
        ]

    # --- URLs and the binding cookie ---------------------------------------------------------

    def _public(self, path: str) -> str:
        return f"{self.settings.public_url.rstrip('/')}{path}"

    def _flow_cookie(self, base: str, path: str) -> tuple[str, str]:
        """(name, path) of a flow cookie: path-scoped over http, ``__Host-`` over https."""
        if self.settings.secure_cookies:
            return cookie_name(self.settings, base), "/"
        return base, self.url(path)

    def _binding_cookie(self) -> tuple[str, str]:
        return self._flow_cookie(BINDING_COOKIE, "/oauth")

    def _pending_cookie(self) -> tuple[str, str]:
        return self._flow_cookie(PENDING_COOKIE, "/link-request")

    def _return_url(self, return_path: str | None) -> str | None:
        """A path becomes a URL on the public URL; the resolver checks it (and anything
        else) against AUTHQL_ALLOWED_REDIRECTS."""
        if not return_path:
            return None
        if (
            return_path.startswith("/")
            and not return_path.startswith("//")
            and "\\" not in return_path
            and return_path.isprintable()
        ):
            return self._public(return_path)
        return return_path

    # --- handlers ------------------------------------------------------------------------------

    async def oauth_start(self, request: DialectRequest) -> Response:
        provider, context = request.path("provider"), request.context
        link = (request.query("link") or "").strip().lower() in _TRUE
        try:
            with _configured(provider):
                started = await oauth.start_oauth(
                    context,
                    provider=provider,
                    redirect_uri=self._link(f"/oauth/{provider}/callback"),
                    link=link,
                    return_url=self._return_url(request.query("return_path")),
                    trusted_redirect=True,
                )
        except ValidationFailed:  # the only thing checked here is the return URL
            raise ValidationFailed(
                "return_path is not allowed.",
                fields={"return_path": "Not an allowed return path."},
            ) from None
        except Unauthorized:
            raise Unauthorized(
                BAD_ACCESS_TOKEN if context.credential_rejected else NO_ACCESS_TOKEN
            ) from None
        response = _redirect(started.authorization_url)
        name, path = self._binding_cookie()
        set_cookie(
            response, self.settings, name, started.binding, max_age=oauth.STATE_TTL, path=path
        )
        return response

    async def oauth_callback(self, request: DialectRequest) -> Response:
        provider = request.path("provider")
        try:
            with _configured(provider):
                response = await self._finish(request, provider)
        except Conflict as error:
            params = {"provider": provider, "code": "OAUTH_ACCOUNT_CONFLICT"}
            if email := error.fields.get("email"):
                params["email"] = email
            response = _redirect(f"{self._link(CONFLICT_PAGE)}?{urlencode(params)}")
            if isinstance(error, OAuthConflict):
                name, path = self._pending_cookie()
                set_cookie(
                    response,
                    self.settings,
                    name,
                    error.pending_token,
                    max_age=oauth.PENDING_TTL,
                    path=path,
                )
        except AuthError as caught:
            error = _callback_error(caught)
            if _wants_json(request) or error.code is ErrorCode.NOT_FOUND:
                response = self.error_response(error)
            else:
                code = self.render_error(error)[1].get("code") or error.code.value
                response = _redirect(f"{self._public('/')}?{urlencode({'error': code})}")
        name, path = self._binding_cookie()
        clear_cookie(response, self.settings, name, path=path)
        return response

    async def _finish(self, request: DialectRequest, provider: str) -> Response:
        context = request.context
        code = request.query("code")
        if request.query("error") or not code:
            oauth.provider_client(context, provider)  # an unknown provider stays a 404
            raise Said(400, "The provider did not grant access", "OAUTH_PROVIDER_ERROR")
        finished = await oauth.finish_oauth(
            context,
            provider=provider,
            code=code,
            state=request.query("state") or "",
            binding=read_cookie(request.request, self.settings, BINDING_COOKIE),
        )
        outcome = finished.outcome
        target = finished.return_url or self._public("/")
        if finished.result == "linked":
            return _redirect(target)
        if outcome.status in _CHALLENGES:
            params = {
                "tempToken": outcome.challenge_token or "",
                "methods": ",".join(available_methods(outcome)),
            }
            if outcome.status is AuthStatus.TWO_FACTOR_SETUP_REQUIRED:
                params["code"] = "2FA_SETUP_REQUIRED"
            return _redirect(f"{self._public(TWO_FACTOR_PAGE)}?{urlencode(params)}")
        if outcome.status is AuthStatus.EMAIL_NOT_VERIFIED:
            raise EmailNotVerified()
        response = _redirect(target)
        self._set_token_cookies(response, outcome)
        return response

    async def list_linked_accounts(self, request: DialectRequest) -> Response:
        principal = request.context.require_principal()
        accounts = await oauth.linked_accounts(principal.user.id)
        return json_response(
            {
                "linkedAccounts": [
                    {
                        "provider": account.provider,
                        "providerAccountId": account.account_id,
                        "email": account.email,
                        "linkedAt": iso(account.linked_at),
                    }
                    for account in accounts
                ]
            }
        )

    async def unlink_account(self, request: DialectRequest) -> Response:
        try:
            await oauth.unlink_account(
                request.context,
                provider=request.path("provider"),
                account_id=request.path("providerAccountId"),
            )
        except Forbidden:
            raise Said(
                403,
                "Set a password or link another account before unlinking this one",
                "PASSWORD_REQUIRED",
                code=ErrorCode.FORBIDDEN,
            ) from None
        return json_response({"success": True})

    async def link_request(self, request: DialectRequest) -> Response:
        email = await request.string("email", required=False)
        if not email:
            raise Said(400, "email is required", "EMAIL_REQUIRED")
        pending = read_cookie(request.request, self.settings, PENDING_COOKIE)
        if not pending:
            raise Said(401, NO_PENDING_LINK, "UNAUTHORIZED", code=ErrorCode.UNAUTHORIZED)
        try:
            await oauth.request_link(
                request.context,
                pending_token=pending,
                email=email,
                link_base=self._link("/link-verify"),
            )
        except InvalidToken:
            raise Said(401, NO_PENDING_LINK, "UNAUTHORIZED", code=ErrorCode.UNAUTHORIZED) from None
        return json_response({"success": True})

    async def link_verify(self, request: DialectRequest) -> Response:
        token = await request.string("token", required=False)
        if not token:
            raise Said(400, "token is required", "TOKEN_REQUIRED")
        sign_in = await request.flag("loginAfterLinking")
        with _link_token():
            outcome = await oauth.verify_link(request.context, token=token, sign_in=sign_in)
        if sign_in:
            return self._issue(request, outcome)
        return json_response({"success": True})
