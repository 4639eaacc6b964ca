"""FluxKit "Auth wire" (npm ``@fluxkitdev/auth``) REST dialect.

Docs: https://fluxkit.dev/docs/auth/rest-api (also ``/local-auth``, ``/jwt`` and
``/oauth``); the contract is in DIALECTS.md section 2. No FluxKit source or tests are
public, so everything beyond the docs' examples is marked [inferred] below.

Native prefix ``/auth``. Transport: ``Authorization: Bearer <access JWT>`` only; no cookies
are read or set, except the OAuth routes' flow-binding cookie. Success bodies have no
envelope and ids are ``_id`` strings; errors are ``{"error": {"code", "message"}}`` (table
in ``FluxKitDialect.render_error``); anything unexpected is 500 ``INTERNAL_ERROR`` /
``Internal server error``.

Served (relative to the prefix): POST /register, POST /login, GET /me, POST /logout,
POST /refresh, POST /change-password, POST /forgot-password, POST /reset-password,
POST /magic-link, POST /verify-magic-link, GET /health, POST /verify-2fa [extension], and
for each configured OAuth provider GET /{provider} and GET /{provider}/callback, with
POST /oauth/exchange (see below).

OAuth sign-in (oauth.start_oauth, oauth.finish_oauth). Upstream has ``/google``,
``/github`` (and ``/discord``); here every provider of ``AUTHQL_OAUTH_PROVIDERS`` gets
``GET /<name>`` and ``GET /<name>/callback`` (so google and github keep upstream's paths),
except a provider named like one of this dialect's own paths (``me``, ``health``,
``oauth``, ...), which is not served here. An unconfigured provider is 404. Register
``<AUTHQL_PUBLIC_URL><prefix>/<name>/callback`` at the provider.
- GET /{provider}?redirect= -> 302 to the provider (authorization code, PKCE S256, state
  and nonce) and the HttpOnly flow-binding cookie ``oauth_binding`` (SameSite=Lax, path
  ``<prefix>/<provider>``, Max-Age 600). ``redirect`` (alias ``redirectUrl``, FluxKit's
  name for the frontend) must be listed in AUTHQL_ALLOWED_REDIRECTS (exactly, or its
  origin), else 400 ``VALIDATION_ERROR`` before any redirect; the frontend is that URL,
  else ``<public url>``. An unreachable provider is 502 ``PROVIDER_ERROR``.
- GET /{provider}/callback -> 302 to ``<frontend>/auth/callback?<params>`` (the frontend's
  query and fragment dropped), clearing the binding cookie on every answer: sign-in or
  sign-up ``code=<one-time code>``; a second factor pending ``challenge=<challengeToken>&
  methods=TOTP,BACKUP_CODE&status=TWO_FACTOR_REQUIRED`` (``status=
  TWO_FACTOR_SETUP_REQUIRED``, ``methods=TOTP`` under the 2FA policy), completed through
  POST /verify-2fa; failures ``error=<CODE>`` on the public URL's page (the flow's frontend
  is not known once it failed): ``OAUTH_ACCOUNT_CONFLICT&email=<email>`` (an unknown
  identity whose email has an account), ``INVALID_STATE`` (unknown, used, expired or
  another browser's state), ``OAUTH_PROVIDER_ERROR`` (the provider came back with
  ``error=`` or without a code, e.g. the user declined), ``OAUTH_TOKEN_EXCHANGE_FAILED``
  (the code or the id_token was refused), ``PROVIDER_ERROR`` (unreachable),
  ``EMAIL_REQUIRED`` (the provider shared no address), ``EMAIL_NOT_VERIFIED`` (an
  unverified address under AUTHQL_REQUIRE_EMAIL_VERIFICATION, on the flow's frontend),
  ``RATE_LIMITED``, or another code of the error table.
- POST /oauth/exchange ``{code}`` -> 200 ``{user:{_id,email,name}, token, refreshToken}``
  as /login; an unknown, used or expired code is 401 ``{error:{code:'INVALID_OAUTH_CODE',
  message:'OAuth code is expired or already used'}}``, a missing one 400
  ``VALIDATION_ERROR``.

Two-factor authentication [extension; FluxKit has none]. Login and verify-magic-link for an
account with 2FA on hand out no token: they answer 403 ``{error:{code:'TWO_FACTOR_REQUIRED',
message:'Two-factor authentication required'}, challengeToken, methods}``. The challenge is
opaque, five minutes, single use, bound to the account and the first factor, dead after five
wrong codes, and never an access token (as a Bearer it is 401 ``INVALID_TOKEN``
everywhere). ``methods`` lists what this dialect can complete on its own: ``TOTP`` and
``BACKUP_CODE``. ``POST /verify-2fa {challengeToken, code, method?}`` completes it
(mfa.verify_two_factor) with ``{user:{_id,email,name}, token, refreshToken}``, as login.
Without ``method`` six digits are a TOTP code and anything else a backup code; ``method``
may name ``TOTP``, ``BACKUP_CODE``, ``SMS`` or ``EMAIL`` (SMS and email codes are sent by
GraphQL's ``sendTwoFactorCode``; FluxKit has no route for it). Errors: 400
``VALIDATION_ERROR`` (missing field, unknown method), 401 ``INVALID_2FA_CODE`` ``Invalid
two-factor code`` (wrong or replayed code: a TOTP step is accepted once), 401
``INVALID_CHALLENGE`` ``Challenge is expired or invalid`` (unknown, used, expired or dead
challenge: sign in again), 423 ``ACCOUNT_LOCKED`` (wrong codes count toward the lockout,
and a locked account cannot finish a live challenge), 429 ``RATE_LIMITED``. Under
AUTHQL_REQUIRE_TWO_FACTOR an account without a factor gets 403 ``{error:{code:
'TWO_FACTOR_SETUP_REQUIRED', message:'Two-factor authentication setup required'},
challengeToken, methods:['TOTP']}``: the challenge enrols TOTP over GraphQL
(``beginTotpSetup``/``confirmTotpSetup`` with ``challengeToken``), then completes through
``/verify-2fa`` with the app's next code or a backup code. Register under that policy
answers 201 ``{user}`` without tokens (sign in next), as with email verification required.

Deliberate deviations (security):
- Logout revokes the server-side session, so the access token *and* its refresh token are
  refused at once everywhere (FluxKit documents "invalidate the current token"; a denylist
  was inferred upstream).
- Refresh tokens rotate and are single use; presenting a used one revokes the whole session
  (reuse detection) and answers 401 ``INVALID_TOKEN``.
- Login failures lock the account after the configured number of tries (423
  ``ACCOUNT_LOCKED``) and are rate limited (429 ``RATE_LIMITED``), both with
  ``Retry-After``; FluxKit documents neither.
- Changing the password revokes every other session of the account (the current one stays).
- Reset and magic-link tokens are random, stored as digests, single use and expiring
  (reset 1 h, magic link 15 min by default); a reset ends every session of the account.
  Forgot-password and magic-link answer identically (body, status, timing) whether or not
  the account exists, and both are rate limited per ip and per address (429).
- Emailed links go only to allowed pages: ``redirectUrl`` must be listed in
  AUTHQL_ALLOWED_REDIRECTS (exact URL or origin), else 400 ``VALIDATION_ERROR`` and no mail
  (never an open redirect).
- ``/health`` reports ``degraded`` with HTTP 503 when the database does not answer.
- OAuth: upstream's callback puts the JWT in the redirect (``/auth/callback?token=``),
  where it lands in browser history, logs and Referer headers. Here the redirect carries a
  one-time code instead: random (256 bits), single use, valid 60 s, kept only as a SHA-256
  digest next to the finished sign-in in this process's memory (at most 10,000 live;
  tokens are never written anywhere in clear), and exchanged by the frontend with POST
  /oauth/exchange. The store is per process: behind several workers the exchange must
  reach the worker that ran the callback (sticky routing), or use one worker.
- OAuth state is random, single use, ten minutes, stored server-side and bound to the
  browser that started the flow (the binding cookie); PKCE S256 and the id_token's
  signature, issuer, audience, expiry and nonce are checked. A replayed or foreign state
  creates nothing.
- An unknown identity whose email belongs to an account is never linked (upstream creates
  or reuses the account by email): the conflict redirect, and the owner links the
  provider while signed in (GraphQL ``startOAuth(link: true)``; FluxKit's Bearer-only
  transport cannot start a linking flow from a browser redirect).
- Over https the binding cookie is ``__Host-oauth_binding`` with path ``/``, so a sibling
  subdomain cannot plant a binding of its own (login CSRF).

[inferred] choices:
- OAuth: upstream documents only ``GET /<provider>``, its callback and the frontend page
  ``/auth/callback?token=``. The ``redirect`` parameter, the ``oauth_binding`` cookie,
  POST /oauth/exchange and ``INVALID_OAUTH_CODE``, the callback's ``code``, ``challenge``/
  ``methods``/``status`` and ``error=`` codes (node-auth's words where it has one:
  ``OAUTH_ACCOUNT_CONFLICT``, ``INVALID_STATE``, ``OAUTH_PROVIDER_ERROR``,
  ``OAUTH_TOKEN_EXCHANGE_FAILED``) are authql's.
- Register always returns ``refreshToken`` beside ``token`` (FluxKit returns it when
  ``jwt.refreshToken.enabled``; authql always issues one).
- Register with email verification required: 201 ``{user}`` with no tokens; login of an
  unverified account: 403 ``EMAIL_NOT_VERIFIED``.
- ``name`` is ``null`` when the account has none; ``createdAt`` is a JavaScript
  ``toISOString()`` timestamp (UTC, milliseconds, ``Z``).
- Error codes and messages not in the docs: 400 ``VALIDATION_ERROR`` (message lists the
  fields), 409 ``CONFLICT`` ``Email already in use``, 423 ``ACCOUNT_LOCKED``, 429
  ``RATE_LIMITED``, 403 ``EMAIL_NOT_VERIFIED``, 401 ``INVALID_TOKEN`` for logout, refresh
  (bad, used or missing token) and change-password without a valid token, 401
  ``INVALID_CREDENTIALS`` ``Current password is incorrect`` on change-password.
- ``/health`` provider names: ``local`` for the password provider, ``magic-link`` for
  magic links, the provider id (``google``, ``github``, ...) for OAuth; SMS codes are left
  out (FluxKit has no route for them), and so are second factors (not sign-in methods).
- Forgot-password and magic-link take an optional ``redirectUrl`` (FluxKit's config name
  for the frontend page the mail links to, as ``<redirectUrl>?token=``); without it the
  links open ``<public_url>/reset-password`` and ``<public_url>/magic-link``, the frontend
  pages that POST the token back. ``magic-link`` echoes the address exactly as sent.
- Reset-password does not sign in (``{message}`` only); a bad, used or expired token is 401
  ``INVALID_TOKEN`` ``Token is expired or invalid``; a weak password is 400
  ``VALIDATION_ERROR`` and leaves the token usable.
- Verify-magic-link answers ``{user:{_id,email,name}, token, refreshToken}`` (``name`` null
  when unset, as on login) and marks the address verified; any bad, used, expired or
  other-purpose token is 401 ``INVALID_MAGIC_LINK``. A missing field (``email``,
  ``token``, ``password``) is 400 ``VALIDATION_ERROR``.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.responses import RedirectResponse, Response

from authql.errors import (
    AuthError,
    ChallengeInvalid,
    Conflict,
    EmailNotVerified,
    ErrorCode,
    InvalidCredentials,
    InvalidToken,
    ProviderError,
    StateInvalid,
    TwoFactorRequired,
    ValidationFailed,
)
from authql.resolvers import (
    accounts,
    meta,
    mfa,
    oauth,
    passwordless,
    passwords,
    recovery,
    sessions,
)
from authql.resolvers.meta import ProviderView
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.rest_compat._base import (
    BearerTransport,
    Dialect,
    DialectRequest,
    Endpoint,
    clear_cookie,
    json_response,
    set_cookie,
)
from authql.services import Services
from authql.services.clock import Clock
from authql.services.tokens import digest
from authql.views import UserView

_TOKEN_MESSAGE = "Token is expired or invalid"
_INVALID_MAGIC_LINK = {
    "error": {"code": "INVALID_MAGIC_LINK", "message": "Magic link is expired or already used"}
}
_INVALID_CODE = {"error": {"code": "INVALID_2FA_CODE", "message": "Invalid two-factor code"}}
_INVALID_CHALLENGE = {
    "error": {"code": "INVALID_CHALLENGE", "message": "Challenge is expired or invalid"}
}
#: Pending second factor -> the 403 error FluxKit clients see beside the challenge.
_PENDING = {
    AuthStatus.TWO_FACTOR_REQUIRED: (
        "TWO_FACTOR_REQUIRED",
        "Two-factor authentication required",
    ),
    AuthStatus.TWO_FACTOR_SETUP_REQUIRED: (
        "TWO_FACTOR_SETUP_REQUIRED",
        "Two-factor authentication setup required",
    ),
}
#: The second factors a FluxKit client can complete without another surface.
_METHODS = ("TOTP", "BACKUP_CODE")
_SIX_DIGITS = re.compile(r"\d{6}")

#: The OAuth flow-binding cookie (``__Host-`` prefixed over https).
BINDING_COOKIE = "oauth_binding"
#: The frontend page the OAuth callback redirects to (upstream's ``/auth/callback``).
FRONTEND_CALLBACK = "/auth/callback"
#: Lifetime and live maximum of the one-time codes that hand an OAuth sign-in over.
CODE_TTL = 60
CODE_LIMIT = 10_000
_INVALID_OAUTH_CODE = {
    "error": {"code": "INVALID_OAUTH_CODE", "message": "OAuth code is expired or already used"}
}

#: ErrorCode -> (HTTP status, FluxKit code, message; None = the resolver's own message).
_ERRORS: dict[ErrorCode, tuple[int, str, str | None]] = {
    ErrorCode.VALIDATION_ERROR: (400, "VALIDATION_ERROR", None),
    ErrorCode.UNAUTHORIZED: (401, "INVALID_TOKEN", _TOKEN_MESSAGE),
    ErrorCode.INVALID_TOKEN: (401, "INVALID_TOKEN", _TOKEN_MESSAGE),
    ErrorCode.INVALID_CREDENTIALS: (401, "INVALID_CREDENTIALS", "Invalid email or password"),
    ErrorCode.FORBIDDEN: (403, "FORBIDDEN", "Forbidden"),
    ErrorCode.EMAIL_NOT_VERIFIED: (403, "EMAIL_NOT_VERIFIED", "Email address not verified"),
    ErrorCode.TWO_FACTOR_REQUIRED: (
        403,
        "TWO_FACTOR_REQUIRED",
        "Two-factor authentication required",
    ),
    ErrorCode.NOT_FOUND: (404, "NOT_FOUND", "Not found"),
    ErrorCode.CONFLICT: (409, "CONFLICT", "Email already in use"),
    ErrorCode.ACCOUNT_LOCKED: (
        423,
        "ACCOUNT_LOCKED",
        "Account temporarily locked. Try again later",
    ),
    ErrorCode.RATE_LIMITED: (429, "RATE_LIMITED", "Too many requests. Try again later"),
    ErrorCode.PROVIDER_ERROR: (502, "PROVIDER_ERROR", "An external provider failed"),
    ErrorCode.INTERNAL: (500, "INTERNAL_ERROR", "Internal server error"),
}


def _iso(moment: dt.datetime) -> str:
    """JavaScript's ``Date.prototype.toISOString()``: UTC, milliseconds, ``Z``."""
    utc = moment.astimezone(dt.UTC) if moment.tzinfo else moment
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _user(user: UserView, *, created: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"_id": user.id, "email": user.email, "name": user.name}
    if created:
        body["createdAt"] = _iso(user.created_at)
    return body


def _signed_in(outcome: AuthOutcome) -> Response:
    """``{user, token, refreshToken}``; a pending second factor is 403 with its challenge,
    a withheld session (email not verified) its AuthError."""
    pending = _PENDING.get(outcome.status)
    if pending is not None and outcome.challenge_token is not None:
        code, message = pending
        methods = [m for m in outcome.two_factor_methods or () if m in _METHODS]
        body = {
            "error": {"code": code, "message": message},
            "challengeToken": outcome.challenge_token,
            "methods": methods,
        }
        return json_response(body, 403)
    if outcome.status is AuthStatus.EMAIL_NOT_VERIFIED:
        raise EmailNotVerified()
    if outcome.status is not AuthStatus.OK or outcome.user is None:
        raise TwoFactorRequired()
    return json_response(
        {
            "user": _user(outcome.user, created=False),
            "token": outcome.access_token,
            "refreshToken": outcome.refresh_token,
        }
    )


def _provider_name(provider: ProviderView) -> str | None:
    """FluxKit's name for a sign-in method, or None for one FluxKit has no route for."""
    if provider.kind == "password":
        return "local"
    if provider.id == "magic-link" or provider.kind in ("magic_link", "magic-link"):
        return "magic-link"
    if provider.kind in ("passwordless", "second-factor"):
        return None  # SMS codes; second factors are not sign-in methods
    return provider.id


def _redirect(url: str) -> Response:
    response = RedirectResponse(url, status_code=302)
    response.headers["cache-control"] = "no-store"
    return response


def _callback_error(error: AuthError) -> str:
    """The ``error=`` code of a failed OAuth callback (else the error table's code)."""
    if isinstance(error, InvalidToken):
        if isinstance(error, StateInvalid):  # a bad state, not the provider's answer
            return "INVALID_STATE"
        return "OAUTH_TOKEN_EXCHANGE_FAILED"
    if isinstance(error, ValidationFailed) and "email" in error.fields:
        return "EMAIL_REQUIRED"
    if isinstance(error, ProviderError):
        return "PROVIDER_ERROR"
    return _ERRORS.get(error.code, _ERRORS[ErrorCode.INTERNAL])[1]


class HandoffCodes:
    """One-time codes handing a finished OAuth sign-in to the frontend, in this process's
    memory: SHA-256 digest -> (outcome, expiry). Single use, ``CODE_TTL`` seconds, at most
    ``CODE_LIMIT`` live (the oldest make room)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[AuthOutcome, dt.datetime]] = {}

    def issue(self, outcome: AuthOutcome) -> str:
        now = self._clock.now()
        for key in [key for key, (_, expires) in self._entries.items() if expires <= now]:
            del self._entries[key]
        while len(self._entries) >= CODE_LIMIT:
            del self._entries[next(iter(self._entries))]
        code = secrets.token_urlsafe(32)
        self._entries[digest(code)] = (outcome, now + dt.timedelta(seconds=CODE_TTL))
        return code

    def redeem(self, code: str) -> AuthOutcome | None:
        """The outcome ``code`` stands for, once; None when unknown, used or expired."""
        entry = self._entries.pop(digest(code), None)
        if entry is None or entry[1] <= self._clock.now():
            return None
        return entry[0]


class FluxKitDialect(Dialect):
    """FluxKit's ``/auth`` routes: Bearer JWTs, ``_id`` ids, ``{error:{code,message}}``."""

    name = "fluxkit"
    title = "FluxKit Auth wire"
    transport = BearerTransport()

    def __init__(self, services: Services, prefix: str) -> None:
        super().__init__(services, prefix)
        self.codes = HandoffCodes(services.clock)

    def endpoints(self) -> list[Endpoint]:
        fixed = self._fixed_endpoints()
        # Provider routes come last, and never take a name this dialect uses itself.
        reserved = {endpoint.path.split("/")[1] for endpoint in fixed} | {"openapi.json"}
        return fixed + [
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

        return [
            Endpoint(
                "GET",
                f"/{provider}",
                start,
                f"Sign in with {label or provider}: 302 to the provider",
                query={"redirect": "string"},
                status=302,
            ),
            Endpoint(
                "GET",
                f"/{provider}/callback",
                callback,
                f"{label or provider}'s redirect back: 302 to <frontend>/auth/callback with a "
                "one-time code (or a 2FA challenge, or an error)",
                query={"code": "string", "state": "string"},
                status=302,
            ),
        ]

    def _fixed_endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "POST",
                "/register",
                self.register,
                "Create an account and sign it in",
                body={"email": "string", "password": "string", "name": "string"},
                required=("email", "password"),
                status=201,
            ),
            Endpoint(
                "POST",
                "/login",
                self.login,
                "Sign in with email and password",
                body={"email": "string", "password": "string"},
                required=("email", "password"),
            ),
            Endpoint("GET", "/me", self.me, "The signed-in user", authenticated=True),
            Endpoint(
                "POST", "/logout", self.logout, "Invalidate the current token", authenticated=True
            ),
            Endpoint(
                "POST",
                "/refresh",
                self.refresh,
                "Exchange a refresh token for a new token pair",
                body={"refreshToken": "string"},
                required=("refreshToken",),
            ),
            Endpoint(
                "POST",
                "/change-password",
                self.change_password,
                "Change the signed-in user's password",
                authenticated=True,
                body={"currentPassword": "string", "newPassword": "string"},
                required=("currentPassword", "newPassword"),
            ),
            Endpoint(
                "POST",
                "/forgot-password",
                self.forgot_password,
                "Mail a password reset link (same answer whether or not the account exists)",
                body={"email": "string", "redirectUrl": "string"},
                required=("email",),
            ),
            Endpoint(
                "POST",
                "/reset-password",
                self.reset_password,
                "Set a new password with the emailed token; every session ends",
                body={"token": "string", "password": "string"},
                required=("token", "password"),
            ),
            Endpoint(
                "POST",
                "/magic-link",
                self.magic_link,
                "Mail a single-use sign-in link (same answer whether or not the account exists)",
                body={"email": "string", "redirectUrl": "string"},
                required=("email",),
            ),
            Endpoint(
                "POST",
                "/verify-magic-link",
                self.verify_magic_link,
                "Sign in with the emailed magic-link token",
                body={"token": "string"},
                required=("token",),
            ),
            Endpoint(
                "POST",
                "/verify-2fa",
                self.verify_two_factor,
                "Complete a sign-in that answered TWO_FACTOR_REQUIRED (authql extension)",
                body={"challengeToken": "string", "code": "string", "method": "string"},
                required=("challengeToken", "code"),
            ),
            Endpoint("GET", "/health", self.health, "Auth wire health and providers"),
            Endpoint(
                "POST",
                "/oauth/exchange",
                self.oauth_exchange,
                "Exchange the one-time code of an OAuth callback for the tokens (single use, "
                "60 s; authql's replacement for the token in the redirect URL)",
                body={"code": "string"},
                required=("code",),
            ),
        ]

    def render_error(self, error: AuthError) -> tuple[int, dict[str, Any]]:
        status, code, message = _ERRORS.get(error.code, _ERRORS[ErrorCode.INTERNAL])
        if message is None:
            details = "; ".join(
                # The resolvers name the link target returnUrl; FluxKit calls it redirectUrl.
                f"{'redirectUrl' if field == 'returnUrl' else field}: {text}"
                for field, text in error.fields.items()
            )
            message = details or error.message
        elif (
            error.code is ErrorCode.INVALID_CREDENTIALS
            and error.message != InvalidCredentials.default_message
        ):
            # change-password names its cause ("Current password is incorrect").
            message = error.message.rstrip(".")
        return status, {"error": {"code": code, "message": message}}

    @property
    def _public_url(self) -> str:
        return self.settings.public_url.rstrip("/")

    # --- handlers --------------------------------------------------------------------------

    async def register(self, request: DialectRequest) -> Response:
        outcome = await accounts.register(
            request.context,
            email=await request.string("email", required=False) or "",
            password=await request.string("password", required=False) or "",
            name=await request.string("name", required=False),
            # Under the 2FA policy a new account has no factor yet: create it, and let the
            # next login answer TWO_FACTOR_SETUP_REQUIRED with the challenge.
            sign_in=not self.settings.require_two_factor,
        )
        assert outcome.user is not None
        body: dict[str, Any] = {"user": _user(outcome.user)}
        if outcome.access_token:
            body.update(token=outcome.access_token, refreshToken=outcome.refresh_token)
        return json_response(body, 201)

    async def login(self, request: DialectRequest) -> Response:
        outcome = await sessions.login(
            request.context,
            identifier=await request.require("email"),
            password=await request.require("password"),
        )
        return _signed_in(outcome)

    async def me(self, request: DialectRequest) -> Response:
        principal = request.context.require_principal()
        return json_response({"user": _user(principal.user)})

    async def logout(self, request: DialectRequest) -> Response:
        await sessions.logout(request.context)
        return json_response({"message": "Logged out successfully"})

    async def refresh(self, request: DialectRequest) -> Response:
        token = (await request.body()).get("refreshToken")
        if not isinstance(token, str) or not token:
            raise InvalidToken()
        outcome = await sessions.refresh(request.context, refresh_token=token)
        return json_response({"token": outcome.access_token, "refreshToken": outcome.refresh_token})

    async def change_password(self, request: DialectRequest) -> Response:
        request.context.require_principal()  # 401 before any complaint about the body
        await passwords.change_password(
            request.context,
            current_password=await request.require("currentPassword"),
            new_password=await request.require("newPassword"),
        )
        return json_response({"message": "Password changed successfully"})

    async def forgot_password(self, request: DialectRequest) -> Response:
        await recovery.request_password_reset(
            request.context,
            identifier=await request.require("email"),
            return_url=await request.string("redirectUrl", required=False),
            link_base=f"{self._public_url}/reset-password",
        )
        return json_response({"message": "If that email exists, a reset link has been sent"})

    async def reset_password(self, request: DialectRequest) -> Response:
        await recovery.reset_password(
            request.context,
            token=await request.require("token"),
            password=await request.require("password"),
        )
        return json_response({"message": "Password reset successfully"})

    async def magic_link(self, request: DialectRequest) -> Response:
        email = await request.require("email")
        await passwordless.send_magic_link(
            request.context,
            email=email,
            return_url=await request.string("redirectUrl", required=False),
            link_base=f"{self._public_url}/magic-link",
        )
        return json_response({"message": f"Magic link sent to {email}"})

    async def verify_magic_link(self, request: DialectRequest) -> Response:
        token = await request.require("token")
        try:
            outcome = await passwordless.verify_magic_link(request.context, token=token)
        except InvalidToken:
            return json_response(_INVALID_MAGIC_LINK, 401)
        return _signed_in(outcome)

    async def verify_two_factor(self, request: DialectRequest) -> Response:
        challenge = await request.require("challengeToken")
        code = await request.require("code")
        method = await request.string("method", required=False)
        if method:
            method = method.strip().upper().replace("-", "_")
        else:
            method = "TOTP" if _SIX_DIGITS.fullmatch(code) else "BACKUP_CODE"
        try:
            outcome = await mfa.verify_two_factor(
                request.context, challenge_token=challenge, code=code, method=method
            )
        except ChallengeInvalid:
            return json_response(_INVALID_CHALLENGE, 401)
        except InvalidToken:
            return json_response(_INVALID_CODE, 401)
        return _signed_in(outcome)

    async def health(self, request: DialectRequest) -> Response:
        view = await meta.health(request.context)
        names = [_provider_name(p) for p in meta.auth_providers(request.context)]
        providers = [name for name in names if name is not None]
        return json_response(
            {"status": view.status, "providers": providers}, 200 if view.database else 503
        )

    # --- OAuth -------------------------------------------------------------------------------

    def _binding_cookie(self, provider: str) -> tuple[str, str]:
        """(name, path): path-scoped to the provider's routes, ``__Host-`` over https."""
        if self.settings.secure_cookies:
            return f"__Host-{BINDING_COOKIE}", "/"
        return BINDING_COOKIE, self.url(f"/{provider}")

    def _frontend(self, target: str | None, params: dict[str, str]) -> Response:
        """302 to ``<target or public url>/auth/callback?<params>``."""
        parts = urlsplit(target or self._public_url)
        path = parts.path.rstrip("/") + FRONTEND_CALLBACK
        return _redirect(urlunsplit((parts.scheme, parts.netloc, path, urlencode(params), "")))

    async def oauth_start(self, request: DialectRequest, provider: str) -> Response:
        target = request.query("redirect") or request.query("redirectUrl")
        try:
            started = await oauth.start_oauth(
                request.context,
                provider=provider,
                redirect_uri=self._public_url + self.url(f"/{provider}/callback"),
                return_url=target or None,
                trusted_redirect=True,
            )
        except ValidationFailed:  # only the frontend URL is checked here
            raise ValidationFailed(
                "redirect is not allowed.", fields={"redirect": "Not an allowed URL."}
            ) from None
        response = _redirect(started.authorization_url)
        name, path = self._binding_cookie(provider)
        set_cookie(
            response, self.settings, name, started.binding, max_age=oauth.STATE_TTL, path=path
        )
        return response

    async def oauth_callback(self, request: DialectRequest, provider: str) -> Response:
        try:
            response = await self._finish(request, provider)
        except Conflict as error:
            params = {"error": "OAUTH_ACCOUNT_CONFLICT"}
            if email := error.fields.get("email"):
                params["email"] = email
            response = self._frontend(None, params)
        except AuthError as error:
            response = self._frontend(None, {"error": _callback_error(error)})
        name, path = self._binding_cookie(provider)
        clear_cookie(response, self.settings, name, path=path)
        return response

    async def _finish(self, request: DialectRequest, provider: str) -> Response:
        code = request.query("code")
        if request.query("error") or not code:
            return self._frontend(None, {"error": "OAUTH_PROVIDER_ERROR"})
        name, _ = self._binding_cookie(provider)
        finished = await oauth.finish_oauth(
            request.context,
            provider=provider,
            code=code,
            state=request.query("state") or "",
            binding=request.request.cookies.get(name),
        )
        outcome, frontend = finished.outcome, finished.return_url
        pending = _PENDING.get(outcome.status)
        if pending is not None and outcome.challenge_token is not None:
            methods = [m for m in outcome.two_factor_methods or () if m in _METHODS]
            params = {
                "challenge": outcome.challenge_token,
                "methods": ",".join(methods),
                "status": pending[0],
            }
            return self._frontend(frontend, params)
        if outcome.status is AuthStatus.EMAIL_NOT_VERIFIED:
            return self._frontend(frontend, {"error": "EMAIL_NOT_VERIFIED"})
        if outcome.status is not AuthStatus.OK or outcome.access_token is None:
            raise AuthError()  # nothing else finishes a sign-in here
        return self._frontend(frontend, {"code": self.codes.issue(outcome)})

    async def oauth_exchange(self, request: DialectRequest) -> Response:
        outcome = self.codes.redeem(await request.require("code"))
        if outcome is None:
            return json_response(_INVALID_OAUTH_CODE, 401)
        return _signed_in(outcome)


DIALECT = FluxKitDialect
