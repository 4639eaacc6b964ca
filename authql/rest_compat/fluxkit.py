"""FluxKit "Auth wire" (npm ``@fluxkitdev/auth``) REST dialect.

Docs: https://fluxkit.dev/docs/auth/rest-api (also ``/local-auth`` and ``/jwt``); the
contract is in DIALECTS.md section 2. No FluxKit source or tests are public, so everything
beyond the docs' examples is marked [inferred] below.

Native prefix ``/auth``. Transport: ``Authorization: Bearer <access JWT>`` only; no cookies
are read or set. Success bodies have no envelope and ids are ``_id`` strings; errors are
``{"error": {"code", "message"}}`` (table in ``FluxKitDialect.render_error``); anything
unexpected is 500 ``INTERNAL_ERROR`` / ``Internal server error``.

Served (relative to the prefix): POST /register, POST /login, GET /me, POST /logout,
POST /refresh, POST /change-password, POST /forgot-password, POST /reset-password,
POST /magic-link, POST /verify-magic-link, GET /health, and POST /verify-2fa [extension].
OAuth (``/google``, ``/github``) comes with authql's OAuth flows and 404s until then.

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

[inferred] choices:
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
from typing import Any

from starlette.responses import Response

from authql.errors import (
    AuthError,
    ChallengeInvalid,
    EmailNotVerified,
    ErrorCode,
    InvalidCredentials,
    InvalidToken,
    TwoFactorRequired,
)
from authql.resolvers import accounts, meta, mfa, passwordless, passwords, recovery, sessions
from authql.resolvers.meta import ProviderView
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.rest_compat._base import (
    BearerTransport,
    Dialect,
    DialectRequest,
    Endpoint,
    json_response,
)
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


class FluxKitDialect(Dialect):
    """FluxKit's ``/auth`` routes: Bearer JWTs, ``_id`` ids, ``{error:{code,message}}``."""

    name = "fluxkit"
    title = "FluxKit Auth wire"
    transport = BearerTransport()

    def endpoints(self) -> list[Endpoint]:
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


DIALECT = FluxKitDialect
