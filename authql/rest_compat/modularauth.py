"""ModularAuth-Kit REST dialect (Express 5 + Mongoose auth module by IamAshrafee).

Docs: repo ``IamAshrafee/ModularAuth-Kit`` ``docs/api/*.md`` (auth, session and history
endpoints, error codes), https://iamashrafee.github.io/ModularAuth-Kit/; messages copied
from ``src/auth/auth.constants.ts`` (``MESSAGES``). Contract: DIALECTS.md section 4.

Native prefix ``/auth``. Transport: an opaque server-session id in the ``sid`` cookie
(``HttpOnly; SameSite=Lax; Path=/``, ``Secure`` when the public URL is https), a fresh one
on every register/login; a missing, invalid, expired or revoked ``sid`` gives 401
``UNAUTHORIZED`` and (when one was sent) clears the cookie. CSRF double submit, on as
upstream: a GET sets a random non-HttpOnly ``_csrf`` cookie (browser session) when the
request had none; every POST/PATCH/DELETE must send ``x-csrf-token`` equal to it (constant
time compare), else 403 ``FORBIDDEN``. Success ``{success:true, message, data}``; errors
``{success:false, error:{code, message, details}}`` (table in ``render_error``).

Served (relative to the prefix): POST /register, POST /login, POST /login/2fa (+ /send,
/setup, /setup/verify: see below), POST /logout,
POST /logout-all, GET /me, PATCH /me, POST /change-password, GET /sessions,
DELETE /sessions/{id}, GET /login-history, and the password-recovery and
email-verification features (both on): POST /forgot-password ``{identifier}`` (always 200,
``data:null``), POST /reset-password ``{token, newPassword}`` (every session ends, no
sign-in), POST /verify-email ``{code}`` and POST /resend-verification (both need ``sid``).
Google sign-in: GET /{provider} and GET /{provider}/callback for every configured OAuth
provider (``/google`` as upstream), in ``modularauth_oauth`` (whose docstring lists their
deviations and [inferred] choices). Rate limits per ip, as
upstream's defaults: login ``modularauth_login`` 10/15 min, register
``modularauth_register`` 5/h, change-password ``modularauth_change_password`` 5/15 min,
forgot-password + reset-password + resend-verification share ``modularauth_recovery``
3/15 min (429 ``RATE_LIMITED`` + ``Retry-After`` + ``RateLimit-*``); authql's own
per-account limits apply beside them (recovery per identifier, verification mails per
account, code guesses per ip).

Two-factor sign-in [inferred/extension]: upstream has no 2FA, but authql enforces it on
every surface, so POST /login (and POST /register, which signs in) for an account with 2FA
on never sets ``sid``. It answers in the success envelope, the only one that carries
``data``: 200 (register: 201) ``{success:true, message:'Two-factor authentication
required', data:{twoFactorRequired:true, challengeToken, methods}}``. ``methods`` are
authql's factor names lower-cased (``totp``, ``backup_code``, ``sms`` for a verified phone,
``email`` for a verified address). Under ``require_two_factor`` an account without a factor
(a new registration, say) gets ``message:'Two-factor authentication setup required',
data:{twoFactorSetupRequired:true, challengeToken, methods:['totp']}``. The challenge token
is authql's: opaque, 5 minutes, single use, bound to the account and the first factor, dead
after 5 wrong codes; it is never a session (as ``sid``) or an access token. Routes added to
finish, each CSRF-checked like every mutation:
- POST /login/2fa ``{challengeToken, code, method?}`` (mfa.verify_two_factor) -> 200
  ``'Login successful'``, ``data:{user}`` + ``Set-Cookie: sid``. ``method`` is ``totp``,
  ``backup_code``, ``sms`` or ``email`` (case-insensitive); by default six digits are a TOTP
  code and anything else a backup code.
- POST /login/2fa/send ``{challengeToken, method: 'sms'|'email'}``
  (mfa.send_two_factor_code) -> 200 ``'Two-factor code has been sent'``, ``data:null``; a
  method the account lacks is 400 ``VALIDATION_ERROR`` (``details`` on ``method``).
- POST /login/2fa/setup ``{challengeToken}`` (setup challenge only; mfa.begin_totp_setup) ->
  200 ``'Two-factor setup started'``, ``data:{secret, qrCode, otpauthUrl}`` (``qrCode`` a
  PNG data URI).
- POST /login/2fa/setup/verify ``{challengeToken, code}`` (mfa.confirm_totp_setup) -> 200
  ``'Two-factor authentication enabled'``, ``data:{backupCodes}`` (ten, shown once); the
  same challenge then completes through /login/2fa with the authenticator's next code (the
  confirming one is spent) or a backup code.
A wrong, replayed or used code is 400 ``TOKEN_INVALID`` ``'The two-factor code you entered
is incorrect'``; an unknown, expired, used or dead challenge (or one of the other purpose)
400 ``TOKEN_INVALID`` ``'This sign-in attempt has expired. Please log in again'``; wrong
codes count toward the lockout (423). No dialect rate limit (not documented upstream);
authql's per-ip budgets for code guesses and sends apply. Managing 2FA while signed in
(enrol, disable, backup codes) is not offered here: use GraphQL or another dialect.

Deliberate deviations (security):
- Lockout is on by default (authql's ``lockout_threshold``), and an unknown identifier
  locks just like a real one, so 423 ``ACCOUNT_LOCKED`` (with ``Retry-After``) cannot
  reveal that an account exists; upstream's lockout is opt-in and only for real accounts.
- ``failedLoginAttempts`` is always rendered ``0``: the real counter is never shown.
- The password policy is authql's (length 8..128), not upstream's upper/lower/digit rule.
- Revocation is immediate everywhere: a session revoked on any surface is 401 here on the
  next request.
- Reset tokens are authql's (256-bit url-safe base64, 1 h by default, stored as an HMAC
  digest), not 64-hex / 15 min: any string is accepted and an unknown one is 400
  ``TOKEN_INVALID``. Upstream's mail carries the bare token; ours carries a link
  ``<public URL>/reset-password?token=<token>`` (the app's reset page, which POSTs it here).
- A verification code dies after ``code_max_attempts`` wrong guesses (upstream: unlimited
  guesses within 15 min); codes last ``email_verification_ttl``.
- forgot-password answers and times the same whether or not the identifier exists (the
  lookup and mail run after the response); an identifier is an email or a username.

[inferred] / unsupported choices:
- ``sid`` ``Max-Age`` is the session lifetime (``refresh_token_ttl``; upstream 7 d) and
  the session is absolute-expiry only: no 30 min idle timeout, no 5-session cap.
- ``_id`` values are UUID strings, not ObjectIds; timestamps are ``toISOString()`` form.
- Unknown body fields are ignored (upstream's zod schemas are ``.strict()`` on register and
  login); ``fullName`` maps to authql's ``name``; usernames are lower-cased as upstream.
- With email verification required, register answers 201 without a ``sid`` (authql issues
  no session to unverified accounts); login answers 403 ``EMAIL_NOT_VERIFIED``.
- ``lastActiveAt`` is authql's session ``last_seen_at``; ``device`` comes from a small
  user-agent parser (``Unknown``/``desktop`` when nothing matches).
- Login history: LOGIN_SUCCEEDED, LOGIN_FAILED (also a wrong current password), LOGOUT
  (also logout-all) and PASSWORD_CHANGED events; ``page`` is capped at 1,000,000.
- INVALID_TOKEN renders 400 ``TOKEN_EXPIRED`` for a genuine, unused but expired token
  (``InvalidToken.expired``), else 400 ``TOKEN_INVALID``; TWO_FACTOR_REQUIRED renders 403
  ``FORBIDDEN``; PROVIDER_ERROR renders 500 ``INTERNAL_ERROR``.
- Register sends no verification code (upstream mails one when verification is enabled):
  the client calls resend-verification. With ``require_email_verification`` on, authql gives
  an unverified account no session, so it cannot reach the ``sid``-only verify-email and
  resend-verification; use the default (off) with this dialect, or verify over another
  surface. A policy violation on reset is reported on ``newPassword``; a reset does not
  compare with the old password (upstream's SAME_PASSWORD).
- Login history also lists ``password_reset`` events (upstream's ``LOGIN_EVENTS``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import re
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

from starlette.responses import Response

from authql.errors import (
    AuthError,
    ChallengeInvalid,
    EmailNotVerified,
    ErrorCode,
    Forbidden,
    InvalidToken,
    ValidationFailed,
)
from authql.resolvers import (
    accounts,
    mfa,
    passwords,
    recovery,
    sessions,
    telemetry,
    verification,
)
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.rest_compat._base import (
    DialectRequest,
    Endpoint,
    SessionCookieTransport,
    clear_cookie,
    json_response,
    set_cookie,
)
from authql.rest_compat.modularauth_oauth import ModularAuthOAuthRoutes
from authql.services.events import AuthEvent, AuthEventType
from authql.views import UserView

SESSION_COOKIE = "sid"
CSRF_COOKIE = "_csrf"
CSRF_HEADER = "x-csrf-token"

MESSAGES = {
    "REGISTER_SUCCESS": "Registration successful",
    "LOGIN_SUCCESS": "Login successful",
    "LOGOUT_SUCCESS": "Logged out successfully",
    "PROFILE_FETCHED": "Profile retrieved successfully",
    "PROFILE_UPDATED": "Profile updated successfully",
    "PASSWORD_CHANGED": "Password changed successfully",
    "FORGOT_PASSWORD_SENT": (
        "If an account exists with that identifier, a password reset link has been sent"
    ),
    "PASSWORD_RESET_SUCCESS": "Password has been reset successfully",
    "EMAIL_VERIFIED": "Email verified successfully",
    "VERIFICATION_RESENT": "Verification code has been sent",
    "SESSIONS_FETCHED": "Active sessions retrieved successfully",
    "SESSION_REVOKED": "Session revoked successfully",
    "HISTORY_FETCHED": "Login history retrieved successfully",
    "INVALID_CREDENTIALS": "The email or password you entered is incorrect",
    "UNAUTHORIZED": "Authentication required",
    "FORBIDDEN": "You are not authorized to perform this action",
    "EMAIL_NOT_VERIFIED": "Please verify your email address before logging in",
    "ACCOUNT_LOCKED": (
        "Account temporarily locked due to too many failed attempts. Please try again later"
    ),
    "RATE_LIMITED": "Too many requests. Please try again later",
    "EMAIL_ALREADY_EXISTS": "Email already registered",
    "USERNAME_ALREADY_EXISTS": "Username already taken",
    "INTERNAL_ERROR": "An unexpected error occurred. Please try again later",
    "VALIDATION_FAILED": "Validation failed",
    "TOKEN_EXPIRED": "This link has expired. Please request a new one",
    "TOKEN_INVALID": "This link is invalid or has already been used",
    "SESSION_NOT_FOUND": "Session not found",
    "CURRENT_SESSION": "Cannot revoke current session. Use logout instead.",
    "CURRENT_PASSWORD_INCORRECT": "Current password is incorrect",
    "NO_PASSWORD_SET": "Cannot change password — account uses external login only",
    "ALREADY_VERIFIED": "Email is already verified",
    # authql's two-factor extension (upstream has no 2FA).
    "TWO_FACTOR_REQUIRED": "Two-factor authentication required",
    "TWO_FACTOR_SETUP_REQUIRED": "Two-factor authentication setup required",
    "TWO_FACTOR_CODE_SENT": "Two-factor code has been sent",
    "TWO_FACTOR_SETUP_STARTED": "Two-factor setup started",
    "TWO_FACTOR_ENABLED": "Two-factor authentication enabled",
    "TWO_FACTOR_CODE_INVALID": "The two-factor code you entered is incorrect",
    "TWO_FACTOR_CHALLENGE_INVALID": "This sign-in attempt has expired. Please log in again",
}
#: Messages handlers raise verbatim; any other resolver message is replaced by the table's.
_VERBATIM = frozenset(MESSAGES.values())

#: ErrorCode -> (HTTP status, ModularAuth-Kit code, default message).
_ERRORS: dict[ErrorCode, tuple[int, str, str]] = {
    ErrorCode.VALIDATION_ERROR: (400, "VALIDATION_ERROR", MESSAGES["VALIDATION_FAILED"]),
    ErrorCode.INVALID_TOKEN: (400, "TOKEN_INVALID", MESSAGES["TOKEN_INVALID"]),
    ErrorCode.UNAUTHORIZED: (401, "UNAUTHORIZED", MESSAGES["UNAUTHORIZED"]),
    ErrorCode.INVALID_CREDENTIALS: (401, "INVALID_CREDENTIALS", MESSAGES["INVALID_CREDENTIALS"]),
    ErrorCode.FORBIDDEN: (403, "FORBIDDEN", MESSAGES["FORBIDDEN"]),
    ErrorCode.TWO_FACTOR_REQUIRED: (403, "FORBIDDEN", MESSAGES["FORBIDDEN"]),
    ErrorCode.EMAIL_NOT_VERIFIED: (403, "EMAIL_NOT_VERIFIED", MESSAGES["EMAIL_NOT_VERIFIED"]),
    ErrorCode.NOT_FOUND: (404, "NOT_FOUND", "Resource not found"),
    ErrorCode.CONFLICT: (409, "CONFLICT", MESSAGES["EMAIL_ALREADY_EXISTS"]),
    ErrorCode.ACCOUNT_LOCKED: (423, "ACCOUNT_LOCKED", MESSAGES["ACCOUNT_LOCKED"]),
    ErrorCode.RATE_LIMITED: (429, "RATE_LIMITED", MESSAGES["RATE_LIMITED"]),
    ErrorCode.PROVIDER_ERROR: (500, "INTERNAL_ERROR", MESSAGES["INTERNAL_ERROR"]),
    ErrorCode.INTERNAL: (500, "INTERNAL_ERROR", MESSAGES["INTERNAL_ERROR"]),
}

#: authql field names -> ModularAuth-Kit's, in VALIDATION_ERROR details.
_FIELD_NAMES = {"name": "fullName"}

_HISTORY_EVENTS = {
    AuthEventType.LOGIN_SUCCEEDED: "login_success",
    AuthEventType.LOGIN_FAILED: "login_failure",
    AuthEventType.PASSWORD_CHANGED: "password_change",
    AuthEventType.LOGOUT: "logout",
    AuthEventType.PASSWORD_RESET: "password_reset",
}

#: ModularAuth-Kit profile field -> register/update_profile keyword.
_PROFILE = {
    "username": "username",
    "fullName": "name",
    "firstName": "first_name",
    "lastName": "last_name",
}
_PROFILE_FIELDS = dict.fromkeys(_PROFILE, "string")

#: Required fields -> zod's message for an empty value.
_LOGIN_FIELDS = {"identifier": "Email or username is required", "password": "Password is required"}
_FORGOT_FIELDS = {"identifier": "Email or username is required"}
_RESET_FIELDS = {"token": "Reset token is required", "newPassword": "New password is required"}
_VERIFY_FIELDS = {"code": "Verification code is required"}
_CHALLENGE_FIELDS = {"challengeToken": "Challenge token is required"}
_TWO_FACTOR_FIELDS = {**_CHALLENGE_FIELDS, "code": "Two-factor code is required"}
_SEND_FIELDS = {**_CHALLENGE_FIELDS, "method": "Method is required"}
#: The challenge answers: AuthStatus -> (flag in data, message).
_CHALLENGES = {
    AuthStatus.TWO_FACTOR_REQUIRED: ("twoFactorRequired", "TWO_FACTOR_REQUIRED"),
    AuthStatus.TWO_FACTOR_SETUP_REQUIRED: ("twoFactorSetupRequired", "TWO_FACTOR_SETUP_REQUIRED"),
}
#: The app page (under the public URL) a reset mail opens [inferred].
RESET_PASSWORD_PAGE = "/reset-password"
_CHANGE_PASSWORD_FIELDS = {
    "currentPassword": "Current password is required",
    "newPassword": "New password is required",
}

_WINDOWS = {"10.0": "10", "6.3": "8.1", "6.2": "8", "6.1": "7"}
_BROWSERS = (
    ("Edge", re.compile(r"Edg(?:e|A|iOS)?/([\d.]+)")),
    ("Opera", re.compile(r"OPR/([\d.]+)")),
    ("Firefox", re.compile(r"(?:Firefox|FxiOS)/([\d.]+)")),
    ("Chrome", re.compile(r"(?:Chrome|CriOS)/([\d.]+)")),
    ("Mobile Safari", re.compile(r"Version/([\d.]+) Mobile/\w+ Safari/")),
    ("Safari", re.compile(r"Version/([\d.]+) (?:\w+/\w+ )?Safari/")),
)
_OSES = (
    ("Windows", re.compile(r"Windows NT ([\d.]+)")),
    ("iOS", re.compile(r"(?:iPhone|iPad|iPod)[^)]*? OS ([\d_]+)")),
    ("Android", re.compile(r"Android ([\d.]+)")),
    ("Mac OS", re.compile(r"Mac OS X ([\d_.]+)")),
    ("Chromium OS", re.compile(r"CrOS()")),
    ("Linux", re.compile(r"Linux()")),
)


class ModularAuthDialect(ModularAuthOAuthRoutes):
    """ModularAuth-Kit's ``/auth`` routes over authql's resolvers."""

    name = "modularauth"
    title = "ModularAuth-Kit"
    transport = SessionCookieTransport(SESSION_COOKIE)

    def endpoints(self) -> list[Endpoint]:
        fixed = self._fixed_endpoints()
        return fixed + self.oauth_endpoints(fixed)

    def _fixed_endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "POST",
                "/register",
                self.register,
                "Create an account and sign it in",
                body={"email": "string", "password": "string", **_PROFILE_FIELDS},
                required=("email", "password"),
                status=201,
                rate_limit="modularauth_register",
            ),
            Endpoint(
                "POST",
                "/login",
                self.login,
                "Sign in with email or username",
                body={"identifier": "string", "password": "string"},
                required=("identifier", "password"),
                rate_limit="modularauth_login",
            ),
            *self._two_factor_endpoints(),
            Endpoint("POST", "/logout", self.logout, "End this session", authenticated=True),
            Endpoint(
                "POST", "/logout-all", self.logout_all, "End every session", authenticated=True
            ),
            Endpoint("GET", "/me", self.me, "The current profile", authenticated=True),
            Endpoint(
                "PATCH",
                "/me",
                self.update_me,
                "Update the profile",
                authenticated=True,
                body=_PROFILE_FIELDS,
            ),
            Endpoint(
                "POST",
                "/change-password",
                self.change_password,
                "Change the password; other sessions end",
                authenticated=True,
                body={"currentPassword": "string", "newPassword": "string"},
                required=("currentPassword", "newPassword"),
                rate_limit="modularauth_change_password",
            ),
            Endpoint("GET", "/sessions", self.list_sessions, "Active sessions", authenticated=True),
            Endpoint(
                "DELETE",
                "/sessions/{id}",
                self.revoke_session,
                "Revoke another session",
                authenticated=True,
            ),
            Endpoint(
                "GET",
                "/login-history",
                self.login_history,
                "Sign-in history",
                authenticated=True,
                query={"page": "integer", "limit": "integer"},
            ),
            Endpoint(
                "POST",
                "/forgot-password",
                self.forgot_password,
                "Mail a password reset link (always the same answer)",
                body={"identifier": "string"},
                required=("identifier",),
                rate_limit="modularauth_recovery",
            ),
            Endpoint(
                "POST",
                "/reset-password",
                self.reset_password,
                "Set a new password from a reset token; every session ends",
                body={"token": "string", "newPassword": "string"},
                required=("token", "newPassword"),
                rate_limit="modularauth_recovery",
            ),
            Endpoint(
                "POST",
                "/verify-email",
                self.verify_email,
                "Verify the email with the mailed 6-digit code",
                authenticated=True,
                body={"code": "string"},
                required=("code",),
            ),
            Endpoint(
                "POST",
                "/resend-verification",
                self.resend_verification,
                "Mail a new verification code (earlier codes die)",
                authenticated=True,
                rate_limit="modularauth_recovery",
            ),
        ]

    def _two_factor_endpoints(self) -> list[Endpoint]:
        """authql's extension: finishing a sign-in that a second factor holds back."""
        return [
            Endpoint(
                "POST",
                "/login/2fa",
                self.login_two_factor,
                "Finish a two-factor sign-in with an authenticator, backup, texted or mailed code",
                body={"challengeToken": "string", "code": "string", "method": "string"},
                required=("challengeToken", "code"),
            ),
            Endpoint(
                "POST",
                "/login/2fa/send",
                self.send_two_factor_code,
                "Text (sms) or mail (email) a code for a pending two-factor sign-in",
                body={"challengeToken": "string", "method": "string"},
                required=("challengeToken", "method"),
            ),
            Endpoint(
                "POST",
                "/login/2fa/setup",
                self.setup_two_factor,
                "Setup challenge only: a new authenticator secret, PNG QR code, otpauth URL",
                body={"challengeToken": "string"},
                required=("challengeToken",),
            ),
            Endpoint(
                "POST",
                "/login/2fa/setup/verify",
                self.confirm_two_factor,
                "Setup challenge only: confirm the authenticator; returns the backup codes",
                body={"challengeToken": "string", "code": "string"},
                required=("challengeToken", "code"),
            ),
        ]

    # --- CSRF and cookies --------------------------------------------------------------------

    async def before(self, request: DialectRequest, endpoint: Endpoint) -> None:
        if endpoint.method in ("GET", "HEAD", "OPTIONS"):
            return
        cookie = request.request.cookies.get(CSRF_COOKIE, "")
        header = request.request.headers.get(CSRF_HEADER, "")
        if not cookie or not header or not hmac.compare_digest(cookie.encode(), header.encode()):
            raise Forbidden(MESSAGES["FORBIDDEN"])

    def after(self, request: DialectRequest, response: Response) -> None:
        if request.request.method == "GET" and not request.request.cookies.get(CSRF_COOKIE):
            token = secrets.token_hex(32)
            set_cookie(response, self.settings, CSRF_COOKIE, token, max_age=None, http_only=False)
        if response.status_code == 401 and request.context.credential_rejected:
            clear_cookie(response, self.settings, SESSION_COOKIE)

    def render_error(self, error: AuthError) -> tuple[int, dict[str, Any]]:
        status, code, message = _ERRORS.get(error.code, _ERRORS[ErrorCode.INTERNAL])
        details: list[dict[str, str]] = []
        if error.code is ErrorCode.VALIDATION_ERROR:
            details = [
                {"field": _FIELD_NAMES.get(field, field), "message": text}
                for field, text in error.fields.items()
            ]
            if not details:
                message = error.message
        elif error.code is ErrorCode.CONFLICT and "email" not in error.fields:
            if "username" in error.fields:
                message = MESSAGES["USERNAME_ALREADY_EXISTS"]
        elif isinstance(error, InvalidToken) and error.expired:
            code, message = "TOKEN_EXPIRED", MESSAGES["TOKEN_EXPIRED"]
        for candidate in (error.message, error.message.rstrip(".")):
            if candidate in _VERBATIM:
                message = candidate
                break
        return status, {
            "success": False,
            "error": {"code": code, "message": message, "details": details},
        }

    # --- handlers ----------------------------------------------------------------------------

    async def register(self, request: DialectRequest) -> Response:
        outcome = await accounts.register(
            request.context,
            email=await request.string("email", required=False) or "",
            password=await request.string("password", required=False) or "",
            **await _profile(request),
        )
        challenge = _challenge(outcome, 201)
        return challenge or self._signed_in(outcome, MESSAGES["REGISTER_SUCCESS"], 201)

    async def login(self, request: DialectRequest) -> Response:
        body = await _fields(request, _LOGIN_FIELDS)
        outcome = await sessions.login(
            request.context, identifier=body["identifier"], password=body["password"]
        )
        if outcome.status is AuthStatus.EMAIL_NOT_VERIFIED:
            raise EmailNotVerified(MESSAGES["EMAIL_NOT_VERIFIED"])
        return _challenge(outcome, 200) or self._signed_in(outcome, MESSAGES["LOGIN_SUCCESS"], 200)

    async def login_two_factor(self, request: DialectRequest) -> Response:
        body = await _fields(request, _TWO_FACTOR_FIELDS)
        method = await request.string("method", required=False)
        if not method:
            method = "TOTP" if _totp_shaped(body["code"]) else "BACKUP_CODE"
        with _two_factor_errors():
            outcome = await mfa.verify_two_factor(
                request.context,
                challenge_token=body["challengeToken"],
                code=body["code"],
                method=method.upper(),
            )
        return self._signed_in(outcome, MESSAGES["LOGIN_SUCCESS"], 200)

    async def send_two_factor_code(self, request: DialectRequest) -> Response:
        body = await _fields(request, _SEND_FIELDS)
        with _two_factor_errors():
            await mfa.send_two_factor_code(
                request.context,
                challenge_token=body["challengeToken"],
                method=body["method"].upper(),
            )
        return _ok(MESSAGES["TWO_FACTOR_CODE_SENT"], None)

    async def setup_two_factor(self, request: DialectRequest) -> Response:
        body = await _fields(request, _CHALLENGE_FIELDS)
        with _two_factor_errors():
            view = await mfa.begin_totp_setup(
                request.context, challenge_token=body["challengeToken"]
            )
        data = {"secret": view.secret, "qrCode": view.qr_code_png, "otpauthUrl": view.otpauth_url}
        return _ok(MESSAGES["TWO_FACTOR_SETUP_STARTED"], data)

    async def confirm_two_factor(self, request: DialectRequest) -> Response:
        body = await _fields(request, _TWO_FACTOR_FIELDS)
        with _two_factor_errors():
            backup_codes = await mfa.confirm_totp_setup(
                request.context, code=body["code"], challenge_token=body["challengeToken"]
            )
        return _ok(MESSAGES["TWO_FACTOR_ENABLED"], {"backupCodes": backup_codes})

    async def logout(self, request: DialectRequest) -> Response:
        await sessions.logout(request.context)
        return self._signed_out()

    async def logout_all(self, request: DialectRequest) -> Response:
        await sessions.logout_all(request.context)
        return self._signed_out()

    async def me(self, request: DialectRequest) -> Response:
        user = request.context.require_principal().user
        return _ok(MESSAGES["PROFILE_FETCHED"], {"user": _user(user)})

    async def update_me(self, request: DialectRequest) -> Response:
        request.context.require_principal()
        user = await accounts.update_profile(request.context, **await _profile(request))
        return _ok(MESSAGES["PROFILE_UPDATED"], {"user": _user(user)})

    async def change_password(self, request: DialectRequest) -> Response:
        principal = request.context.require_principal()
        body = await _fields(request, _CHANGE_PASSWORD_FIELDS)
        if not principal.user.has_password:
            raise ValidationFailed(MESSAGES["NO_PASSWORD_SET"])
        await passwords.change_password(
            request.context,
            current_password=body["currentPassword"],
            new_password=body["newPassword"],
        )
        return _ok(MESSAGES["PASSWORD_CHANGED"], None)

    async def list_sessions(self, request: DialectRequest) -> Response:
        views = await sessions.my_sessions(request.context)
        listed = [
            {
                "_id": view.id,
                "device": _device(view.user_agent),
                "ipAddress": view.ip_address or "unknown",
                "lastActiveAt": _iso(view.last_seen_at),
                "createdAt": _iso(view.created_at),
                "isCurrent": view.current,
            }
            for view in views
        ]
        return _ok(MESSAGES["SESSIONS_FETCHED"], {"sessions": listed})

    async def revoke_session(self, request: DialectRequest) -> Response:
        principal = request.context.require_principal()
        target = request.path("id")
        if _canonical_uuid(target) == principal.session.id:
            raise ValidationFailed(MESSAGES["CURRENT_SESSION"])
        await sessions.revoke_session(request.context, session_id=target)
        return _ok(MESSAGES["SESSION_REVOKED"], None)

    async def login_history(self, request: DialectRequest) -> Response:
        page = min(max(1, _parse_int(request.query("page"), 1)), 1_000_000)
        limit = min(max(1, _parse_int(request.query("limit"), 20)), 100)
        events = await telemetry.my_events(
            request.context, types=list(_HISTORY_EVENTS), offset=(page - 1) * limit, limit=limit
        )
        history = [_history(event) for event in events]
        return _ok(MESSAGES["HISTORY_FETCHED"], {"history": history, "page": page, "limit": limit})

    async def forgot_password(self, request: DialectRequest) -> Response:
        body = await _fields(request, _FORGOT_FIELDS)
        await recovery.request_password_reset(
            request.context,
            identifier=body["identifier"].strip(),
            link_base=self.settings.public_url.rstrip("/") + RESET_PASSWORD_PAGE,
        )
        return _ok(MESSAGES["FORGOT_PASSWORD_SENT"], None)

    async def reset_password(self, request: DialectRequest) -> Response:
        body = await _fields(request, _RESET_FIELDS)
        try:
            await recovery.reset_password(
                request.context, token=body["token"], password=body["newPassword"]
            )
        except ValidationFailed as error:
            if "password" not in error.fields:
                raise
            fields = {"newPassword": error.fields["password"]}
            raise ValidationFailed(MESSAGES["VALIDATION_FAILED"], fields=fields) from None
        return _ok(MESSAGES["PASSWORD_RESET_SUCCESS"], None)

    async def verify_email(self, request: DialectRequest) -> Response:
        request.context.require_principal()
        body = await _fields(request, _VERIFY_FIELDS)
        await verification.verify_email_code(request.context, code=body["code"])
        return _ok(MESSAGES["EMAIL_VERIFIED"], None)

    async def resend_verification(self, request: DialectRequest) -> Response:
        request.context.require_principal()
        await verification.send_verification_email(request.context, code=True)
        return _ok(MESSAGES["VERIFICATION_RESENT"], None)

    # --- rendering ---------------------------------------------------------------------------

    def _signed_in(self, outcome: AuthOutcome, message: str, status: int) -> Response:
        assert outcome.user is not None
        response = _ok(message, {"user": _user(outcome.user)}, status)
        self._set_session_cookie(response, outcome)
        return response

    def _set_session_cookie(self, response: Response, outcome: AuthOutcome) -> None:
        if outcome.session_token:
            set_cookie(
                response,
                self.settings,
                SESSION_COOKIE,
                outcome.session_token,
                max_age=self.settings.refresh_token_ttl,
            )

    def _signed_out(self) -> Response:
        response = _ok(MESSAGES["LOGOUT_SUCCESS"], None)
        clear_cookie(response, self.settings, SESSION_COOKIE)
        return response


def _ok(message: str, data: Any, status: int = 200) -> Response:
    return json_response({"success": True, "message": message, "data": data}, status)


def _challenge(outcome: AuthOutcome, status: int) -> Response | None:
    """The answer for a sign-in a second factor holds back (no ``sid``), else None."""
    if outcome.status not in _CHALLENGES:
        return None
    flag, message = _CHALLENGES[outcome.status]
    methods = [method.lower() for method in outcome.two_factor_methods or ()]
    data = {flag: True, "challengeToken": outcome.challenge_token, "methods": methods}
    return _ok(MESSAGES[message], data, status)


@contextlib.contextmanager
def _two_factor_errors() -> Iterator[None]:
    """A dead challenge and a wrong code, each in its own words (both 400 TOKEN_INVALID)."""
    try:
        yield
    except ChallengeInvalid:
        raise InvalidToken(MESSAGES["TWO_FACTOR_CHALLENGE_INVALID"]) from None
    except InvalidToken:
        raise InvalidToken(MESSAGES["TWO_FACTOR_CODE_INVALID"]) from None


def _totp_shaped(code: str) -> bool:
    """Six digits (spaces ignored) is an authenticator code; anything else a backup code."""
    compact = code.strip().replace(" ", "")
    return len(compact) == 6 and compact.isdigit()


async def _fields(request: DialectRequest, messages: dict[str, str]) -> dict[str, str]:
    """Required non-empty strings, every problem reported at once (zod's messages)."""
    body = await request.body()
    values: dict[str, str] = {}
    problems: dict[str, str] = {}
    for name, empty_message in messages.items():
        value = body.get(name)
        if value is None:
            problems[name] = "Required"
        elif not isinstance(value, str):
            problems[name] = "Expected string"
        elif not value:
            problems[name] = empty_message
        else:
            values[name] = value
    if problems:
        raise ValidationFailed(MESSAGES["VALIDATION_FAILED"], fields=problems)
    return values


async def _profile(request: DialectRequest) -> dict[str, Any]:
    """The profile fields sent, as resolver keywords (others are ignored)."""
    values: dict[str, Any] = {}
    for wire, keyword in _PROFILE.items():
        value = await request.string(wire, required=False)
        if value is not None:
            values[keyword] = value.strip().lower() if wire == "username" else value
    return values


def _user(user: UserView) -> dict[str, Any]:
    body: dict[str, Any] = {
        "_id": user.id,
        "email": user.email,
        "isEmailVerified": user.email_verified,
        "failedLoginAttempts": 0,
        "createdAt": _iso(user.created_at),
        "updatedAt": _iso(user.updated_at),
    }
    for key, value in (
        ("username", user.username),
        ("fullName", user.name),
        ("firstName", user.first_name),
        ("lastName", user.last_name),
    ):
        if value is not None:
            body[key] = value
    return body


def _history(event: AuthEvent) -> dict[str, Any]:
    return {
        "_id": event.id,
        "userId": event.user_id,
        "event": _HISTORY_EVENTS[event.type],
        "ipAddress": event.ip_address or "unknown",
        "userAgent": event.user_agent or "unknown",
        "device": _device(event.user_agent),
        "success": event.success,
        "createdAt": _iso(event.at),
    }


def _device(user_agent: str | None) -> dict[str, str]:
    """``{browser, os, type}`` in ua-parser-js's words, from the usual user-agent tokens."""
    agent = user_agent or ""
    browser = next(
        (f"{name} {m.group(1)}" for name, rx in _BROWSERS if (m := rx.search(agent))), "Unknown"
    )
    system = "Unknown"
    for name, rx in _OSES:
        if match := rx.search(agent):
            version = match.group(1).replace("_", ".")
            version = _WINDOWS.get(version, version) if name == "Windows" else version
            system = f"{name} {version}".strip()
            break
    kind = "desktop"
    if "iPad" in agent or "Tablet" in agent or ("Android" in agent and "Mobile" not in agent):
        kind = "tablet"
    elif "Mobi" in agent or "iPhone" in agent:
        kind = "mobile"
    return {"browser": browser, "os": system, "type": kind}


def _iso(moment: dt.datetime) -> str:
    """JavaScript's ``Date.prototype.toISOString()``: UTC, milliseconds, ``Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse_int(raw: str | None, default: int) -> int:
    """JavaScript's ``parseInt(raw, 10) || default``."""
    match = re.match(r"\s*([+-]?\d{1,15})", raw or "")
    return (int(match.group(1)) if match else 0) or default


def _canonical_uuid(raw: str) -> str | None:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


DIALECT = ModularAuthDialect
