"""awesome-node-auth ("node-auth", npm ``awesome-node-auth``) REST dialect: its auth router.

Docs: https://awesomenodeauth.com (``docs/api-reference/endpoints.md``); source
github.com/nik2208/awesome-node-auth (``src/router/auth.router.ts``,
``src/services/token.service.ts``, ``src/middleware/auth.middleware.ts``); the contract is in
DIALECTS.md section 1. Where the docs and the code disagree the code wins (``/me`` answers
``sub``, not ``id``).

Native prefix ``/auth``. Transport: cookie mode by default (HttpOnly ``accessToken``, path
``/``, and ``refreshToken``, path ``<prefix>/refresh``; with an https public URL they are
``__Host-accessToken`` and ``__Secure-refreshToken``); a request header
``X-Auth-Strategy: bearer`` on ``/login``, ``/refresh``, ``/reset-password``, ``/2fa/verify``,
``/magic-link/verify`` or ``/sms/verify`` returns the tokens in the body and sets no
cookie. Protected routes read ``Authorization: Bearer`` first, then the access cookie, and
answer 403 (not 401) without a valid one. With ``AUTHQL_NODE_AUTH_CSRF`` on,
token issue also sets a readable ``csrf-token`` cookie (``__Host-csrf-token`` over https),
and cookie-authenticated non-GET requests must echo it in ``X-CSRF-Token`` (403
``CSRF_INVALID``, message ``CSRF token validation failed`` as in the middleware's code);
Bearer requests are exempt. Errors are ``{error, code?}`` (table in ``render_error``);
anything unexpected is 500 ``{error: 'Internal server error'}``.

Served (relative to the prefix): POST /register, POST /login, POST /logout, POST /refresh,
GET /me, PATCH /profile, POST /change-password, GET /sessions, DELETE /sessions/{handle},
POST /sessions/cleanup; and, in ``node_auth_mail`` (a helper module this class inherits
from): POST /forgot-password, POST /reset-password, POST /send-verification-email,
GET /verify-email, POST /change-email/request, POST /change-email/confirm,
POST /magic-link/send, POST /magic-link/verify, POST /sms/send, POST /sms/verify,
POST /add-phone; and, in ``node_auth_2fa`` (which also renders the 2FA challenge of every
token-issuing route and the ``mode: '2fa'`` variants of the magic-link and SMS routes, with
their own deviations and [inferred] choices): POST /2fa/setup, POST /2fa/verify-setup,
POST /2fa/verify, POST /2fa/disable; and, in ``node_auth_oauth`` (with its own deviations
and [inferred] choices): GET /oauth/{provider}, GET /oauth/{provider}/callback,
GET /linked-accounts, DELETE /linked-accounts/{provider}/{providerAccountId},
POST /link-request, POST /link-verify. DELETE /account deletes the account for good (a
hard delete, as upstream: sessions, roles, identities and personal data go; audit events
keep only the user id) and clears the cookies: ``{success: true}``. Deviation (security):
it re-checks the owner as GraphQL ``deleteAccount`` does: ``password`` when the account
has one (401 ``{error: 'Password is required'}`` / ``{error: 'Password is incorrect'}``)
and ``totpCode`` (or ``code``, a TOTP or backup code) when 2FA is on (missing or wrong: 401
``{error: 'Invalid TOTP code'}``); wrong ones count toward the lockout (423 once locked).

Deliberate deviations (security):
- ``POST /sessions/cleanup`` needs an admin (upstream it is public): 403
  ``{error: 'No access token provided'}`` anonymously, 403 ``{error: 'Forbidden'}`` for
  non-admins. It deletes revoked sessions as well as expired ones.
- Refresh tokens are opaque (not JWTs), single use and rotated inside one session; reusing
  one revokes the session. Upstream answers a revoked session with ``SESSION_REVOKED``;
  authql cannot tell revoked from used or unknown, so every refused refresh token is 401
  ``{error: 'Invalid refresh token', code: 'INVALID_REFRESH_TOKEN'}``.
- Logout revokes the session behind a valid Bearer token as well as a cookie (upstream
  reads only the cookie), so its access and refresh tokens die at once everywhere.
- Changing the password revokes every other session of the account (upstream keeps them);
  the current one stays signed in.
- Login failures lock the account (423 ``ACCOUNT_LOCKED``) and are rate limited (429
  ``RATE_LIMITED``), both with ``Retry-After``; node-auth has no codes for these.
- Over https only the ``__Host-``/``__Secure-`` cookie names are read (upstream also accepts
  the bare names, which a sibling subdomain could plant). The path-scoped refresh cookie is
  ``__Secure-refreshToken``: upstream names it ``__Host-`` although browsers refuse
  ``__Host-`` cookies whose path is not ``/``.
- With CSRF on, a cookie-authenticated logout needs ``X-CSRF-Token`` too (upstream's logout
  skips the check); a logout whose cookie is already dead still succeeds. So do
  ``/sms/send`` and ``/sms/verify`` when a live access cookie comes with them (signed in,
  they add and verify a phone number).
- Mail and SMS leave in the background: ``/forgot-password``, ``/magic-link/send`` and
  ``/sms/send`` by ``email`` (or ``phone``) answer the same ``{success: true}``, in the same
  time, for existing and unknown accounts. ``/sms/send`` by email for an account without a
  phone number is a silent 200 too (upstream: 400 ``PHONE_NOT_SET``, which enumerates);
  by ``userId`` it keeps upstream's 404 ``{error: 'User not found'}`` and 400
  ``{error: 'User does not have a phone number configured', code: 'PHONE_NOT_SET'}``.
- Every link and code is single use, stored as a digest, bound to its purpose (a reset
  token is refused by ``/magic-link/verify``, ...), and dies when a newer one is sent.
  SMS codes die after ``AUTHQL_CODE_MAX_ATTEMPTS`` wrong guesses (upstream: unlimited).
- ``/reset-password`` ends every session of the account (upstream keeps them) and clears a
  lockout; in bearer mode it signs in (a new session, tokens in the body), in cookie mode
  it answers ``{success: true}`` without signing in, as upstream.
- ``/change-email/request`` asks accounts with a password for it (``password``, or
  ``currentPassword``): missing or wrong is 401 ``{error: 'Password is incorrect', code:
  'INVALID_CREDENTIALS'}``. Accounts without a password need none, so upstream's 403
  ``PASSWORD_REQUIRED`` never occurs. The old address gets a notice at request time as
  well as after the change; sessions are kept. The 409 for a taken address comes after the
  password check.
- ``/sms/verify`` answers an unknown ``userId`` like a wrong code (401 ``Invalid or expired
  SMS code``; upstream 404 after the code check).
- ``/add-phone`` does not store the number at once (upstream does, unverified): it texts a
  code to it (400 ``VALIDATION_ERROR`` for a malformed number or one another account has);
  ``POST /sms/verify {phone, code}`` while signed in then sets and verifies it and answers
  ``{success: true}`` (no new session). ``phoneNumber: null`` (clearing the number) is
  not supported: 400.

[inferred] choices:
- Register maps ``email``, ``password``, ``username``, ``firstName``, ``lastName``, ``name``
  and ``phone`` (or ``phoneNumber``) and does not sign in (as upstream). Errors: 400
  ``VALIDATION_ERROR`` (``email and password are required`` when either is missing, else the
  field messages), 409 ``USER_ALREADY_EXISTS`` (``Email address is already in use``).
- Login also accepts ``identifier`` (email or username) for ``email``; a missing field is
  401 ``INVALID_CREDENTIALS``, as upstream. An unverified account with verification required
  is 403 ``{error: 'Email address is not verified', code: 'EMAIL_NOT_VERIFIED'}``.
- Cookie Max-Age: the access cookie (and ``csrf-token``) live as long as the access token
  (``AUTHQL_ACCESS_TOKEN_TTL``, upstream fixed 15 min); the refresh cookie as long as its
  session has left (``AUTHQL_REFRESH_TOKEN_TTL`` at login; upstream fixed 7 d). A missing
  ``csrf-token`` cookie is re-issued on any cookie-mode answer, as upstream's middleware does.
- ``/me``: ``role`` is ``admin`` for admins, else the first role, else ``user``; ``roles``
  lists them all; ``loginProvider`` is ``local`` for password sessions, else the sign-in
  method; ``firstName``/``lastName`` appear when set.
- ``GET /sessions`` items: ``sessionHandle`` (the session id), ``userId``, ``createdAt``,
  ``expiresAt``, ``lastActiveAt`` (ISO 8601, milliseconds, ``Z``), ``ipAddress``,
  ``userAgent`` and ``current``.
- Other codes: 502 ``PROVIDER_ERROR``; 404 bodies are ``{error}``. A pending second factor
  answers node-auth's challenge shapes (``node_auth_2fa``), never 403 ``2FA_REQUIRED``.
- Mail links are ``<AUTHQL_PUBLIC_URL><prefix>/<route>?token=``, as upstream's
  ``buildUiLink`` (without its UI): ``/reset-password``, ``/verify-email``,
  ``/change-email/confirm`` and ``/magic-link/verify``. ``GET /verify-email`` completes
  from the link itself; the other three are POST routes, so the operator's frontend serves
  the page at that path and POSTs the token (as upstream expects of ``siteUrl``). Upstream
  picks the site from an allow-listed ``Origin``/``Referer``; authql always uses the
  public URL. ``emailLang`` is accepted and ignored (one set of templates).
- Route errors in upstream's words (no ``code`` unless noted): ``/reset-password`` 400
  ``Invalid reset token`` / ``Reset token has expired``; ``/verify-email`` 400 ``Token is
  required`` / ``Invalid verification token`` / ``Verification token has expired``;
  ``/send-verification-email`` 400 ``Email is already verified``; ``/change-email/confirm``
  400 ``Invalid email-change token`` / ``Email-change token has expired``; both change-email
  routes 409 ``Email address is already in use``; ``/magic-link/send`` 400 ``email is
  required``; ``/magic-link/verify`` 401 ``Invalid magic link token``
  (``INVALID_MAGIC_LINK``) / ``Magic link token has expired`` (``MAGIC_LINK_EXPIRED``);
  ``/sms/send`` 400 ``userId or email is required``; ``/sms/verify`` 400 ``userId is
  required``, 400 ``code is required`` [inferred], 401 ``Invalid or expired SMS code``.
  Weak passwords and malformed addresses or numbers are 400 ``VALIDATION_ERROR``.
- ``/sms/send`` and ``/sms/verify`` also take ``phone`` (or ``phoneNumber``) instead of
  ``userId``; ``/sms/send`` picks ``email``, then ``userId``, then ``phone``. ``/sms/send
  {phone}`` while signed in texts a code for a new number, like ``/add-phone``.
- ``/reset-password`` takes ``password`` (code) or ``newPassword`` (docs).
- For an account with 2FA on, ``/magic-link/verify``, ``/sms/verify`` and bearer-mode
  ``/reset-password`` answer ``/login``'s challenge (``{requiresTwoFactor, tempToken,
  available2faMethods}``); the password reset itself has happened by then.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from authql.context import RequestContext, authenticate, bearer_token
from authql.errors import (
    AuthError,
    EmailNotVerified,
    ErrorCode,
    Forbidden,
    InvalidCredentials,
    InvalidToken,
    TwoFactorRequired,
    Unauthorized,
    ValidationFailed,
)
from authql.resolvers import accounts, cleanup, lifecycle, passwords, sessions
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.rest_compat._base import (
    DialectRequest,
    Endpoint,
    clear_cookie,
    json_response,
    set_cookie,
)
from authql.rest_compat.node_auth_2fa import SETUP_ROUTES, challenge_response, temp_token
from authql.rest_compat.node_auth_mail import (
    BAD_ACCESS_TOKEN,
    NO_ACCESS_TOKEN,
    Said,
    bearer_strategy,
    cookie_name,
    iso,
    read_cookie,
)
from authql.rest_compat.node_auth_oauth import NodeAuthOAuthRoutes
from authql.services.tokens import same_secret
from authql.views import SessionView

ACCESS_COOKIE = "accessToken"
REFRESH_COOKIE = "refreshToken"
CSRF_COOKIE = "csrf-token"
CSRF_HEADER = "x-csrf-token"
NO_REFRESH_TOKEN = "No refresh token provided"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Public routes that act on the caller's account when one is signed in (CSRF applies then).
_PRINCIPAL_AWARE = frozenset({"/logout", "/sms/send", "/sms/verify"})

#: ErrorCode -> (HTTP status, node-auth code or None, message; None = the resolver's own).
_ERRORS: dict[ErrorCode, tuple[int, str | None, str | None]] = {
    ErrorCode.VALIDATION_ERROR: (400, "VALIDATION_ERROR", None),
    ErrorCode.UNAUTHORIZED: (403, None, NO_ACCESS_TOKEN),
    ErrorCode.INVALID_CREDENTIALS: (401, "INVALID_CREDENTIALS", "Invalid credentials"),
    ErrorCode.INVALID_TOKEN: (401, "INVALID_REFRESH_TOKEN", "Invalid refresh token"),
    ErrorCode.FORBIDDEN: (403, None, "Forbidden"),
    ErrorCode.EMAIL_NOT_VERIFIED: (403, "EMAIL_NOT_VERIFIED", "Email address is not verified"),
    ErrorCode.TWO_FACTOR_REQUIRED: (403, "2FA_REQUIRED", "Two-factor authentication required"),
    ErrorCode.NOT_FOUND: (404, None, None),
    ErrorCode.CONFLICT: (409, "USER_ALREADY_EXISTS", "Email address is already in use"),
    ErrorCode.ACCOUNT_LOCKED: (423, "ACCOUNT_LOCKED", "Account temporarily locked"),
    ErrorCode.RATE_LIMITED: (429, "RATE_LIMITED", "Too many requests. Try again later"),
    ErrorCode.PROVIDER_ERROR: (502, "PROVIDER_ERROR", "An external provider failed"),
    ErrorCode.INTERNAL: (500, None, "Internal server error"),
}

_CONFLICT_FIELDS = {"username": "Username", "phone": "Phone number"}


class CsrfInvalid(Forbidden):
    """The double-submit check failed (rendered with node-auth's ``CSRF_INVALID``)."""

    default_message = "CSRF token validation failed"


@dataclass(frozen=True)
class NodeAuthTransport:
    """``Authorization: Bearer`` first, then the access-token cookie (upstream's order)."""

    async def authenticate(self, request: Request, context: RequestContext) -> None:
        settings = context.services.settings
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            token = read_cookie(request, settings, ACCESS_COOKIE)
        if token:
            await authenticate(context, token)


def _session_info(session: SessionView) -> dict[str, Any]:
    return {
        "sessionHandle": session.id,
        "userId": session.user_id,
        "createdAt": iso(session.created_at),
        "expiresAt": iso(session.expires_at),
        "lastActiveAt": iso(session.last_seen_at),
        "ipAddress": session.ip_address,
        "userAgent": session.user_agent,
        "current": session.current,
    }


def _signed_in(outcome: AuthOutcome) -> AuthOutcome:
    """The outcome if it carries tokens; a pending step (other than the 2FA challenge,
    rendered before this) becomes its AuthError."""
    if outcome.status is AuthStatus.EMAIL_NOT_VERIFIED:
        raise EmailNotVerified()
    if outcome.status is not AuthStatus.OK or not outcome.access_token:
        raise TwoFactorRequired()
    return outcome


class NodeAuthDialect(NodeAuthOAuthRoutes):
    """node-auth's auth router: JWT cookies (or Bearer), ``{success:true}``, ``{error, code}``."""

    name = "node-auth"
    title = "awesome-node-auth"
    transport = NodeAuthTransport()

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "POST",
                "/register",
                self.register,
                "Register a new user (no tokens are issued)",
                body={
                    "email": "string",
                    "password": "string",
                    "username": "string",
                    "firstName": "string",
                    "lastName": "string",
                    "name": "string",
                    "phone": "string",
                },
                required=("email", "password"),
                status=201,
            ),
            Endpoint(
                "POST",
                "/login",
                self.login,
                "Email/password login (cookies, or tokens with X-Auth-Strategy: bearer)",
                body={"email": "string", "password": "string"},
                required=("email", "password"),
            ),
            Endpoint("POST", "/logout", self.logout, "Log out: revoke the session, clear cookies"),
            Endpoint(
                "POST",
                "/refresh",
                self.refresh,
                "Rotate the refresh token (cookie or body) for new tokens",
                body={"refreshToken": "string"},
            ),
            Endpoint("GET", "/me", self.me, "The current user's claims", authenticated=True),
            Endpoint(
                "PATCH",
                "/profile",
                self.profile,
                "Update first and last name",
                authenticated=True,
                body={"firstName": "string", "lastName": "string"},
            ),
            Endpoint(
                "POST",
                "/change-password",
                self.change_password,
                "Change the password (other sessions are revoked)",
                authenticated=True,
                body={"currentPassword": "string", "newPassword": "string"},
                required=("currentPassword", "newPassword"),
            ),
            Endpoint(
                "GET", "/sessions", self.list_sessions, "The user's sessions", authenticated=True
            ),
            Endpoint(
                "DELETE",
                "/sessions/{handle}",
                self.revoke_session,
                "Revoke one of the user's sessions",
                authenticated=True,
            ),
            Endpoint(
                "POST",
                "/sessions/cleanup",
                self.cleanup_sessions,
                "Delete expired and revoked sessions (admins only)",
                authenticated=True,
            ),
            Endpoint(
                "DELETE",
                "/account",
                self.delete_account,
                "Delete the account for good (needs the password / a 2FA code), clear cookies",
                authenticated=True,
                body={"password": "string", "totpCode": "string"},
            ),
            *self.mail_endpoints(),
            *self.two_factor_endpoints(),
            *self.oauth_endpoints(),
        ]

    def render_error(self, error: AuthError) -> tuple[int, dict[str, Any]]:
        if isinstance(error, Said):  # upstream's own words for one route (node_auth_mail)
            return error.status, dict(error.body)
        status, code, message = _ERRORS.get(error.code, _ERRORS[ErrorCode.INTERNAL])
        if error.code is ErrorCode.VALIDATION_ERROR:
            details = "; ".join(f"{field}: {text}" for field, text in error.fields.items())
            message = details or error.message
        elif error.code is ErrorCode.UNAUTHORIZED and error.message == BAD_ACCESS_TOKEN:
            message = BAD_ACCESS_TOKEN
        elif isinstance(error, CsrfInvalid):
            code, message = "CSRF_INVALID", error.message
        elif (
            error.code is ErrorCode.INVALID_CREDENTIALS
            and error.message != InvalidCredentials.default_message
        ):
            # change-password: upstream's ``{error: 'Current password is incorrect'}``.
            code, message = None, error.message.rstrip(".")
        elif error.code is ErrorCode.NOT_FOUND:
            message = error.message.rstrip(".")
        elif error.code is ErrorCode.CONFLICT and "email" not in error.fields:
            taken = [_CONFLICT_FIELDS.get(field, field) for field in error.fields]
            message = (
                f"{' and '.join(taken)} is already in use" if taken else error.message.rstrip(".")
            )
        body: dict[str, Any] = {"error": message}
        if code is not None:
            body["code"] = code
        return status, body

    # --- CSRF and authentication checks ---------------------------------------------------

    async def before(self, request: DialectRequest, endpoint: Endpoint) -> None:
        """Protected routes: 403 without a credential, then the CSRF double-submit check for
        cookie credentials on unsafe methods, then 403 for a refused credential."""
        guarded = endpoint.authenticated or endpoint.path in _PRINCIPAL_AWARE
        if not guarded or (endpoint.path in SETUP_ROUTES and await temp_token(request)):
            return  # enrolling from a setup tempToken involves no session
        context, http = request.context, request.request
        bearer = bearer_token(http.headers.get("authorization"))
        cookie = None if bearer else read_cookie(http, self.settings, ACCESS_COOKIE)
        if endpoint.authenticated and not (bearer or cookie):
            raise Unauthorized(NO_ACCESS_TOKEN)
        if (
            cookie
            and self.settings.node_auth_csrf
            and endpoint.method not in _SAFE_METHODS
            and (endpoint.authenticated or context.principal is not None)
        ):
            expected = read_cookie(http, self.settings, CSRF_COOKIE)
            sent = http.headers.get(CSRF_HEADER)
            if not expected or not sent or not same_secret(expected, sent):
                raise CsrfInvalid()
        if endpoint.authenticated and context.principal is None:
            raise Unauthorized(BAD_ACCESS_TOKEN)

    def after(self, request: DialectRequest, response: Response) -> None:
        """With CSRF on, a cookie-mode client that lacks the ``csrf-token`` cookie gets one
        (upstream's auto-initialising middleware), so it can never be stuck on 403."""
        http = request.request
        if (
            not self.settings.node_auth_csrf
            or bearer_strategy(request)
            or bearer_token(http.headers.get("authorization"))
            or read_cookie(http, self.settings, CSRF_COOKIE)
        ):
            return
        name = cookie_name(self.settings, CSRF_COOKIE)
        if any(v.startswith(f"{name}=") for v in response.headers.getlist("set-cookie")):
            return
        self._set_csrf(response)

    # --- cookies ---------------------------------------------------------------------------

    def _set_csrf(self, response: Response) -> None:
        set_cookie(
            response,
            self.settings,
            cookie_name(self.settings, CSRF_COOKIE),
            secrets.token_urlsafe(32),
            max_age=self.services.access_tokens.ttl,
            http_only=False,
        )

    def _issue(self, request: DialectRequest, outcome: AuthOutcome) -> Response:
        """Tokens in the body (bearer strategy) or as cookies with ``{success: true}``; a
        pending second factor answers node-auth's challenge, an unverified email its error."""
        pending = challenge_response(outcome)
        if pending is not None:
            return pending
        outcome = _signed_in(outcome)
        if bearer_strategy(request):
            return json_response(
                {
                    "success": True,
                    "accessToken": outcome.access_token,
                    "refreshToken": outcome.refresh_token,
                }
            )
        response = json_response({"success": True})
        self._set_token_cookies(response, outcome)
        return response

    def _set_token_cookies(self, response: Response, outcome: AuthOutcome) -> None:
        """The access and refresh cookies (and ``csrf-token`` when CSRF is on) of a session."""
        assert outcome.access_token and outcome.refresh_token and outcome.session
        settings = self.settings
        set_cookie(
            response,
            settings,
            cookie_name(settings, ACCESS_COOKIE),
            outcome.access_token,
            max_age=outcome.expires_in or self.services.access_tokens.ttl,
        )
        remaining = outcome.session.expires_at - self.services.clock.now()
        set_cookie(
            response,
            settings,
            cookie_name(settings, REFRESH_COOKIE, root=False),
            outcome.refresh_token,
            max_age=max(0, int(remaining.total_seconds())),
            path=self.url("/refresh"),
        )
        if settings.node_auth_csrf:
            self._set_csrf(response)

    def _clear_cookies(self, response: Response) -> None:
        settings = self.settings
        clear_cookie(response, settings, cookie_name(settings, ACCESS_COOKIE))
        clear_cookie(
            response,
            settings,
            cookie_name(settings, REFRESH_COOKIE, root=False),
            path=self.url("/refresh"),
        )
        if settings.node_auth_csrf:
            clear_cookie(response, settings, cookie_name(settings, CSRF_COOKIE))

    # --- handlers --------------------------------------------------------------------------

    async def register(self, request: DialectRequest) -> Response:
        email = await request.string("email", required=False)
        password = await request.string("password", required=False)
        if not email or not password:
            raise ValidationFailed("email and password are required")
        outcome = await accounts.register(
            request.context,
            email=email,
            password=password,
            username=await request.string("username", required=False),
            first_name=await request.string("firstName", required=False),
            last_name=await request.string("lastName", required=False),
            name=await request.string("name", required=False),
            phone=await request.string("phone", required=False, aliases=("phoneNumber",)),
            sign_in=False,
        )
        assert outcome.user is not None
        return json_response({"success": True, "userId": outcome.user.id}, 201)

    async def login(self, request: DialectRequest) -> Response:
        identifier = await request.string("email", required=False, aliases=("identifier",))
        password = await request.string("password", required=False)
        if not identifier or not password:
            raise InvalidCredentials()
        outcome = await sessions.login(request.context, identifier=identifier, password=password)
        return self._issue(request, outcome)

    async def logout(self, request: DialectRequest) -> Response:
        if request.context.principal is not None:
            await sessions.logout(request.context)
        response = json_response({"success": True})
        self._clear_cookies(response)
        return response

    async def refresh(self, request: DialectRequest) -> Response:
        token = await request.string("refreshToken", required=False) or read_cookie(
            request.request, self.settings, REFRESH_COOKIE
        )
        if not token:
            return json_response({"error": NO_REFRESH_TOKEN}, 401)
        outcome = await sessions.refresh(request.context, refresh_token=token)
        return self._issue(request, outcome)

    async def me(self, request: DialectRequest) -> Response:
        principal = request.context.require_principal()
        user, session = principal.user, principal.session
        roles = list(user.roles)
        claims: dict[str, Any] = {
            "sub": user.id,
            "email": user.email,
            "role": "admin" if "admin" in roles else (roles[0] if roles else "user"),
            "roles": roles,
            "loginProvider": "local" if session.method == "password" else session.method,
            "isEmailVerified": user.email_verified,
            "isTotpEnabled": user.two_factor_enabled,
            "sid": session.id,
        }
        if user.first_name is not None:
            claims["firstName"] = user.first_name
        if user.last_name is not None:
            claims["lastName"] = user.last_name
        return json_response(claims)

    async def profile(self, request: DialectRequest) -> Response:
        body = await request.body()
        changes: dict[str, Any] = {}
        for wire, argument in (("firstName", "first_name"), ("lastName", "last_name")):
            if wire in body:
                value = body[wire]
                if value is not None and not isinstance(value, str):
                    raise ValidationFailed(
                        f"{wire} must be a string.", fields={wire: "Must be a string."}
                    )
                changes[argument] = value
        await accounts.update_profile(request.context, **changes)
        return json_response({"success": True})

    async def change_password(self, request: DialectRequest) -> Response:
        await passwords.change_password(
            request.context,
            current_password=await request.string("currentPassword", required=False) or "",
            new_password=await request.string("newPassword", required=False) or "",
        )
        return json_response({"success": True})

    async def list_sessions(self, request: DialectRequest) -> Response:
        mine = await sessions.my_sessions(request.context)
        return json_response({"sessions": [_session_info(session) for session in mine]})

    async def revoke_session(self, request: DialectRequest) -> Response:
        await sessions.revoke_session(request.context, session_id=request.path("handle"))
        return json_response({"success": True})

    async def cleanup_sessions(self, request: DialectRequest) -> Response:
        deleted = await cleanup.cleanup(request.context)
        return json_response({"success": True, "deleted": deleted})

    async def delete_account(self, request: DialectRequest) -> Response:
        try:
            await lifecycle.delete_account(
                request.context,
                password=await request.string("password", required=False),
                code=await request.string("totpCode", required=False, aliases=("code",)),
                hard=True,
            )
        except InvalidToken:
            raise Said(401, "Invalid TOTP code", code=ErrorCode.INVALID_TOKEN) from None
        response = json_response({"success": True})
        self._clear_cookies(response)
        return response


DIALECT = NodeAuthDialect
