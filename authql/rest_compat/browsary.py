"""Browsary dialect: the auth API of Browsary (browser-automation SaaS by Silyze).

Docs: https://docs.browsary.com/api-reference/authentication, /guides/authentication and
/api-reference/root; the server is not public, its auth logic is the ``@silyze/auth``
library (repo ``silyze/auth``), whose status vocabulary and JWT ``info`` object this follows.
Default mount ``/api/auth``; the root route ``GET /api`` sits beside the prefix.

Transport: the JWT lives in the ``token`` cookie (HttpOnly, SameSite=Lax, Path=/, Secure when
the public URL is https) and is echoed in the body as ``token``; ``Authorization: Bearer`` is
accepted too. ``remember`` truthy -> persistent cookie (Max-Age = refresh_token_ttl), else a
browser-session cookie. The JWT is an authql access token naming the session. Browsary has
no refresh endpoint, so the cookie is the only credential and is issued with the session's
lifetime (``refresh_token_ttl``) instead of the short access-token ttl: safe, because every
request checks that the session is live, so logout/revocation anywhere kills it at once.

Served (relative to the prefix): GET "" (status), POST /register, POST /login, GET /logout,
POST /verify/request, POST /verify/submit, POST /reset/request, POST /reset/submit,
POST /2fa/enable/request, POST /2fa/enable/submit, POST /2fa/verify, POST /2fa/reset; the
external-provider routes GET /external/providers, GET /external, GET and DELETE
/external/{provider}, GET /external/{provider}/init, GET /external/{provider}/redirect and
POST /external/register/{token} (``authql.rest_compat.browsary_external``, whose docstring
lists their answers, deviations and inferred choices); and GET /api (root) beside the
prefix.

Two-factor state. The library keeps it in the JWT (``twoFactorPassed: false`` -> status
``2fa_required``); authql never issues a session before the factor, so the pending state is
a challenge instead. Login, register, verify/submit and reset/submit for an account with
2FA on answer ``{status:'2fa_required', token:<challenge>}`` and put the challenge in the
``token`` cookie (Max-Age 300, the challenge's life, whatever ``remember`` says; set by
register too, without ``remember``, since the next step reads it from the cookie). The
challenge is opaque, single use, bound to the account and the first factor, dead after five
wrong codes, and never an access token: every route (and every other surface) treats it as
no session. ``GET /api/auth`` with it answers ``{status:'2fa_required', auth:{sub, exp,
info}}`` (mfa.describe_challenge): ``exp`` is the challenge's expiry, ``info`` has
``twoFactorConfigured: true, twoFactorPassed: false``; there is no ``sid`` (no session yet).
``POST /2fa/verify {token}`` (the app's code, or a backup code) with the challenge in the
cookie (or as Bearer) -> mfa.verify_two_factor -> ``{status, token}`` and the real session
cookie, persistent when the sign-in asked for ``remember``.
- ``POST /2fa/enable/request`` (email-verified session) -> ``{status:'2fa_setup', url,
  secret}`` (mfa.begin_totp_setup; nothing is enforced until confirmed).
- ``POST /2fa/enable/submit {token}`` -> mfa.confirm_totp_setup -> a fresh cookie for the
  same session and ``{status, token, backupCodes}``. Turning 2FA on ends every other
  session of the account.
- ``POST /2fa/reset {token}`` (a current code) -> mfa.reset_totp -> ``{status:'2fa_setup',
  url, secret, token}`` (``token``: a fresh JWT for the same session, also set as the
  cookie). The old authenticator keeps working until ``/2fa/enable/submit`` confirms the
  new one, which also replaces the backup codes; ``GET /api/auth`` stays ``ok`` meanwhile.

Deliberate deviations (security):
- Passwords use authql's argon2id, lockout and rate limits (the library's default is an
  unsalted SHA-256); a locked account answers 423 and a spent rate limit 429, both with
  Retry-After, in Browsary's error shape. Wrong second-factor codes count toward the same
  lockout, and a locked account cannot finish a live challenge (423 on ``/2fa/verify``).
- The ``2fa_required`` state is a challenge token, not a JWT that lacks a claim (see
  above): nothing presented in that state authenticates any route.
- A TOTP code (its 30-second step) is accepted once per account: a replay is 400. After
  ``/2fa/enable/submit`` with a setup challenge, ``/2fa/verify`` therefore needs the
  app's next code (or a backup code).
- The JWT is EdDSA-signed by authql (not HS256) and carries authql's claims (``sub``,
  ``sid``, ``roles``, ``iat``, ``exp``, ``iss``, ``aud``, ``jti``); ``GET /api/auth`` adds
  the library's ``info`` object (``id, email, emailVerified, twoFactorConfigured,
  twoFactorPassed``) to the claims it echoes.
- ``GET /logout`` also revokes the session server-side when a valid token came (upstream
  only clears the cookie). Logging out by GET is upstream's choice and is kept: a
  cross-site GET can log a user out, an annoyance only, since it cannot sign anyone in.
- The emailed verification and reset tokens are not JWTs (the library's are stateless
  JWTs valid 360 d and 24 h) but random single-use tokens stored as digests, bound
  to their purpose, expiring after ``email_verification_ttl`` (24 h) and
  ``password_reset_ttl`` (1 h); a new request kills the earlier link. A reset ends every
  session of the account before the new one starts.
- ``returnUrl`` must be listed in AUTHQL_ALLOWED_REDIRECTS (exact URL or origin), else 400
  and no mail (upstream puts the URL into the mail as sent).
- ``reset/request`` answers the same (body, status, timing) whether or not the account
  exists, and is rate limited per ip and per address (429); ``verify/request`` per account.

[inferred] choices:
- Error statuses (body always ``{status:'error', message}``): 400 for validation and most
  failures (Browsary documents 400 for unverified email; also invalid tokens, forbidden,
  2FA required, provider errors), 401 for bad credentials and unauthenticated, 404 not
  found, 409 conflict (email taken), 423 locked, 429 rate limited, 500 unexpected (no
  internals). Field problems are appended to ``message`` (Browsary has no field list).
- ``GET /api/auth`` when anonymous (or with a dead token): ``{status:'ok', auth:null}``.
  ``status`` follows the user's ``emailVerified`` (``email_not_verified`` while
  unverified), as does login's; ``twoFactorPassed`` is true for every live authql session
  (sessions only exist once every factor passed). A pending challenge shows as above.
- Under AUTHQL_REQUIRE_TWO_FACTOR an account without a factor gets a setup challenge:
  sign-ins answer ``{status:'2fa_setup', token}`` (+ the cookie) and ``GET /api/auth``
  ``{status:'2fa_setup', auth}`` (``twoFactorConfigured: false``). With it in the cookie,
  ``/2fa/enable/request`` and ``/2fa/enable/submit`` enrol that account (no email check:
  it is the only way in); submit then answers ``{status:'2fa_required', token:<the same
  challenge>, backupCodes}`` and the sign-in completes through ``/2fa/verify``.
- ``backupCodes`` (ten, shown once) is authql's addition to ``/2fa/enable/submit``;
  ``/2fa/verify`` takes a backup code in ``token`` (six digits are a TOTP code, anything
  else a backup code). SMS and email second factors have no Browsary route.
- 2FA routes: the email-verified rule (400) covers the session routes
  ``/2fa/enable/request``, ``/2fa/enable/submit`` and ``/2fa/reset``. A wrong code is 400
  (``Invalid code.``); enabling when 2FA is on, or submitting with no setup pending, is
  400. No credential is 401; a credential that is neither a live session nor a live
  challenge of the right kind (unknown, used, expired, dead after five wrong codes) is 401
  ``Invalid or expired token.``, as ``GET /api/auth`` shows it as ``auth: null``;
  ``/2fa/verify`` with a full session is 400 (nothing pending).
- Register requires ``firstName`` and ``lastName`` (the library's register schema) and
  ``confirmPassword``, which must equal ``password`` (checked before anything is created).
- Register sets the cookie only when ``remember`` is truthy (upstream); otherwise the token
  is only in the body. Login always sets it (session cookie without ``remember``).
- With ``require_email_verification`` on, register and an unverified login answer
  ``{status:'email_not_verified'}`` with no token and no cookie.
- Bad credentials (unknown email or wrong password alike) -> 401.
- ``verify/request`` (signed in, ``{returnUrl?}``) -> ``{status:'ok'}``; already verified
  -> 400. ``reset/request`` (``{email, returnUrl?}``) -> ``{status:'ok'}`` always.
- Without ``returnUrl`` the mails link to ``<public_url>/verify?token=`` and
  ``<public_url>/reset?token=`` (the frontend pages that POST the token back); with it,
  to ``<returnUrl>?token=``.
- ``verify/submit`` and ``reset/submit`` start a new session and answer like login
  (``{status, token}`` + the ``token`` cookie). Neither body has ``remember``, so the
  cookie is a browser-session cookie. ``reset/submit`` checks ``confirmPassword`` (400 on
  mismatch) and the password rules before the token is spent; a bad, used, expired or
  other-purpose token is 400. A reset marks the address verified (the link was read in the
  mailbox), so its ``status`` is ``ok``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from starlette.responses import Response

from authql.context import Principal, bearer_token
from authql.errors import (
    AuthError,
    ChallengeInvalid,
    EmailNotVerified,
    ErrorCode,
    InvalidToken,
    Unauthorized,
    ValidationFailed,
)
from authql.resolvers import accounts, mfa, recovery, sessions, verification
from authql.resolvers.challenges import CHALLENGE_TTL
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.rest_compat._base import (
    BearerTransport,
    DialectRequest,
    Endpoint,
    clear_cookie,
    json_response,
    set_cookie,
)
from authql.rest_compat.browsary_external import COOKIE, BrowsaryExternalRoutes
from authql.views import UserView

ROOT_SERVICE = "browsary::root"
ROOT_VERSION = "2024-05-01"
#: A challenge's purpose -> the status Browsary shows while it is pending.
PENDING = {"verify": "2fa_required", "setup": "2fa_setup"}
_SIX_DIGITS = re.compile(r"\d{6}")

#: Every AuthError code -> Browsary's HTTP status (body: {status:'error', message}).
STATUS: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.INVALID_TOKEN: 400,
    ErrorCode.FORBIDDEN: 400,
    ErrorCode.EMAIL_NOT_VERIFIED: 400,
    ErrorCode.TWO_FACTOR_REQUIRED: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.ACCOUNT_LOCKED: 423,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.PROVIDER_ERROR: 400,
    ErrorCode.INTERNAL: 500,
}


def _info(user: UserView, *, passed: bool = True) -> dict[str, Any]:
    """The library's ``info`` object (``passed``: whether the second factor is behind)."""
    return {
        "id": user.id,
        "email": user.email,
        "emailVerified": user.email_verified,
        "twoFactorConfigured": user.two_factor_enabled,
        "twoFactorPassed": passed,
    }


def _confirmed(password: str, confirm: str) -> None:
    """VALIDATION_ERROR unless ``confirmPassword`` repeats ``password``."""
    if confirm != password:
        raise ValidationFailed(
            "confirmPassword must match password.",
            fields={"confirmPassword": "Does not match password."},
        )


def _status(user: UserView) -> str:
    return "ok" if user.email_verified else "email_not_verified"


def _presented(request: DialectRequest) -> str | None:
    """The credential sent when it is not a live session: a candidate challenge token."""
    if request.context.principal is not None:
        return None
    headers, cookies = request.request.headers, request.request.cookies
    return bearer_token(headers.get("authorization")) or cookies.get(COOKIE) or None


def _verified(request: DialectRequest) -> Principal:
    """The signed-in principal of an email-verified account (401 / 400 otherwise)."""
    principal = request.context.require_principal()
    if not principal.user.email_verified:
        raise EmailNotVerified("Verify your email address first.")
    return principal


@contextlib.contextmanager
def _live_challenge() -> Iterator[None]:
    """A dead challenge in the cookie is no credential at all: 401, like a dead JWT."""
    try:
        yield
    except ChallengeInvalid:
        raise Unauthorized("Invalid or expired token.") from None


class BrowsaryDialect(BrowsaryExternalRoutes):
    name = "browsary"
    title = "Browsary"
    transport = BearerTransport(cookie=COOKIE)

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "GET",
                "",
                self.status,
                "Session status: ok, email_not_verified, 2fa_required, 2fa_setup or auth null",
            ),
            Endpoint(
                "POST",
                "/register",
                self.register,
                "Create an account and sign it in",
                body={
                    "firstName": "string",
                    "lastName": "string",
                    "email": "string",
                    "password": "string",
                    "confirmPassword": "string",
                    "remember": "boolean",
                },
                required=("firstName", "lastName", "email", "password", "confirmPassword"),
            ),
            Endpoint(
                "POST",
                "/login",
                self.login,
                "Sign in with email and password",
                body={"email": "string", "password": "string", "remember": "boolean"},
                required=("email", "password"),
            ),
            Endpoint("GET", "/logout", self.logout, "Clear the cookie and end the session"),
            Endpoint(
                "POST",
                "/verify/request",
                self.verify_request,
                "Mail the signed-in user an email verification link",
                authenticated=True,
                body={"returnUrl": "string"},
            ),
            Endpoint(
                "POST",
                "/verify/submit",
                self.verify_submit,
                "Verify the email with the emailed token and sign in",
                body={"token": "string"},
                required=("token",),
            ),
            Endpoint(
                "POST",
                "/reset/request",
                self.reset_request,
                "Mail a password reset link (same answer whether or not the account exists)",
                body={"email": "string", "returnUrl": "string"},
                required=("email",),
            ),
            Endpoint(
                "POST",
                "/reset/submit",
                self.reset_submit,
                "Set a new password with the emailed token and sign in",
                body={"token": "string", "password": "string", "confirmPassword": "string"},
                required=("token", "password", "confirmPassword"),
            ),
            Endpoint(
                "POST",
                "/2fa/enable/request",
                self.enable_request,
                "Start authenticator setup: a new secret and its otpauth URL",
                authenticated=True,
            ),
            Endpoint(
                "POST",
                "/2fa/enable/submit",
                self.enable_submit,
                "Confirm the authenticator with a code; returns backup codes (shown once)",
                authenticated=True,
                body={"token": "string"},
                required=("token",),
            ),
            Endpoint(
                "POST",
                "/2fa/verify",
                self.two_factor_verify,
                "Complete a 2fa_required sign-in with an authenticator or backup code",
                authenticated=True,
                body={"token": "string"},
                required=("token",),
            ),
            Endpoint(
                "POST",
                "/2fa/reset",
                self.two_factor_reset,
                "Replace the authenticator (needs a current code); confirm via enable/submit",
                authenticated=True,
                body={"token": "string"},
                required=("token",),
            ),
            *self.external_endpoints(),
            Endpoint("GET", "", self.root, "Service root (health check)", beside_prefix=True),
        ]

    def render_error(self, error: AuthError) -> tuple[int, dict[str, Any]]:
        message = error.message
        details = [f"{k}: {v}" for k, v in error.fields.items() if k not in message]
        if details:
            message = f"{message} ({'; '.join(details)})"
        return STATUS.get(error.code, 500), {"status": "error", "message": message}

    # --- handlers --------------------------------------------------------------------------

    async def status(self, request: DialectRequest) -> Response:
        view = sessions.session_status(request.context)
        principal = request.context.principal
        if view.claims is not None and principal is not None:
            auth = {**view.claims, "info": _info(principal.user)}
            return json_response({"status": _status(principal.user), "auth": auth})
        token = _presented(request)
        try:
            if token is None:
                raise ChallengeInvalid()
            pending = await mfa.describe_challenge(request.context, challenge_token=token)
        except InvalidToken:
            return json_response({"status": "ok", "auth": None})
        auth = {
            "sub": pending.user.id,
            "exp": int(pending.expires_at.timestamp()),
            "info": _info(pending.user, passed=False),
        }
        return json_response({"status": PENDING[pending.purpose], "auth": auth})

    async def register(self, request: DialectRequest) -> Response:
        first_name = await request.require("firstName")
        last_name = await request.require("lastName")
        email = await request.require("email")
        password = await request.require("password")
        _confirmed(password, await request.require("confirmPassword"))
        remember = await request.flag("remember")
        outcome = await accounts.register(
            request.context,
            email=email,
            password=password,
            first_name=first_name,
            last_name=last_name,
            remember=remember,
        )
        # Upstream sets the cookie on registration only when ``remember`` is truthy.
        return self._signed_in(outcome, cookie=remember)

    async def login(self, request: DialectRequest) -> Response:
        email = await request.require("email")
        password = await request.require("password")
        remember = await request.flag("remember")
        outcome = await sessions.login(
            request.context, identifier=email, password=password, remember=remember
        )
        return self._signed_in(outcome)

    async def logout(self, request: DialectRequest) -> Response:
        if request.context.principal is not None:
            await sessions.logout(request.context)
        response = json_response({"status": "logout"})
        clear_cookie(response, self.settings, COOKIE)
        return response

    async def verify_request(self, request: DialectRequest) -> Response:
        request.context.require_principal()  # 401 before any complaint about the body
        await verification.send_verification_email(
            request.context,
            return_url=await request.string("returnUrl", required=False),
            link_base=f"{self.settings.public_url.rstrip('/')}/verify",
        )
        return json_response({"status": "ok"})

    async def verify_submit(self, request: DialectRequest) -> Response:
        outcome = await verification.verify_email(
            request.context, token=await request.require("token"), sign_in=True
        )
        return self._signed_in(outcome)

    async def reset_request(self, request: DialectRequest) -> Response:
        await recovery.request_password_reset(
            request.context,
            identifier=await request.require("email"),
            return_url=await request.string("returnUrl", required=False),
            link_base=f"{self.settings.public_url.rstrip('/')}/reset",
        )
        return json_response({"status": "ok"})

    async def reset_submit(self, request: DialectRequest) -> Response:
        token = await request.require("token")
        password = await request.require("password")
        _confirmed(password, await request.require("confirmPassword"))
        outcome = await recovery.reset_password(
            request.context, token=token, password=password, sign_in=True
        )
        return self._signed_in(outcome)

    async def enable_request(self, request: DialectRequest) -> Response:
        challenge = _presented(request)
        if challenge is None:
            _verified(request)
        with _live_challenge():
            setup = await mfa.begin_totp_setup(request.context, challenge_token=challenge)
        return json_response(
            {"status": "2fa_setup", "url": setup.otpauth_url, "secret": setup.secret}
        )

    async def enable_submit(self, request: DialectRequest) -> Response:
        challenge = _presented(request)
        principal = _verified(request) if challenge is None else None
        code = await request.require("token")
        with _live_challenge():
            codes = await mfa.confirm_totp_setup(
                request.context, code=code, challenge_token=challenge
            )
        if principal is None:
            # Enrolled through a setup challenge: the same challenge now awaits a code.
            body = {"status": "2fa_required", "token": challenge, "backupCodes": codes}
            return json_response(body)
        return self._session_cookie(principal, {"backupCodes": codes})

    async def two_factor_verify(self, request: DialectRequest) -> Response:
        challenge = _presented(request)
        if challenge is None:
            if request.context.principal is not None:
                raise ValidationFailed("No sign-in is waiting for a second factor.")
            raise Unauthorized()
        code = await request.require("token")
        method = "TOTP" if _SIX_DIGITS.fullmatch(code) else "BACKUP_CODE"
        with _live_challenge():
            outcome = await mfa.verify_two_factor(
                request.context, challenge_token=challenge, code=code, method=method
            )
        return self._signed_in(outcome)

    async def two_factor_reset(self, request: DialectRequest) -> Response:
        principal = _verified(request)
        setup = await mfa.reset_totp(request.context, code=await request.require("token"))
        extra = {"url": setup.otpauth_url, "secret": setup.secret}
        return self._session_cookie(principal, extra, status="2fa_setup")

    async def root(self, request: DialectRequest) -> Response:
        principal = request.context.principal
        subject: Any = "public"
        if principal is not None:
            subject = {"id": principal.user.id, "email": principal.user.email}
        return json_response({"service": ROOT_SERVICE, "version": ROOT_VERSION, "subject": subject})

    # --- rendering -------------------------------------------------------------------------

    def _jwt(self, user: UserView, session_id: str) -> str:
        """The cookie's JWT: an access token for the session, living as long as it may."""
        return self.services.access_tokens.issue(
            user_id=user.id,
            session_id=session_id,
            roles=list(user.roles),
            now=self.services.clock.now().timestamp(),
            ttl=self.settings.refresh_token_ttl,
        )

    def _with_cookie(self, body: dict[str, Any], token: str, *, remember: bool) -> Response:
        response = json_response(body)
        max_age = self.settings.refresh_token_ttl if remember else None
        set_cookie(response, self.settings, COOKIE, token, max_age=max_age)
        return response

    def _credential(self, outcome: AuthOutcome) -> tuple[str, int | None] | None:
        """The ``token`` cookie (value, max-age) for ``outcome``: the challenge while a
        factor is pending (its life), else the session's JWT (persistent when the session
        is remembered); None when the resolver withheld tokens until the email is
        verified."""
        if outcome.challenge_token is not None:
            return outcome.challenge_token, CHALLENGE_TTL
        if outcome.status is AuthStatus.EMAIL_NOT_VERIFIED or outcome.session is None:
            return None
        assert outcome.user is not None
        token = self._jwt(outcome.user, outcome.session.id)
        return token, self.settings.refresh_token_ttl if outcome.session.remember else None

    def _signed_in(self, outcome: AuthOutcome, *, cookie: bool = True) -> Response:
        """``{status, token}`` (+ the cookie, unless ``cookie`` is false);
        ``{status:'2fa_required'|'2fa_setup', token:<challenge>}`` (+ the challenge cookie,
        always) while a factor is pending; ``{status:'email_not_verified'}`` when the
        resolver withheld tokens until the email is verified."""
        credential = self._credential(outcome)
        if credential is None:
            return json_response({"status": "email_not_verified"})
        token, max_age = credential
        if outcome.challenge_token is not None:
            setup = outcome.status is AuthStatus.TWO_FACTOR_SETUP_REQUIRED
            status = PENDING["setup" if setup else "verify"]
            cookie = True
        else:
            assert outcome.user is not None
            status = _status(outcome.user)
        response = json_response({"status": status, "token": token})
        if cookie:
            set_cookie(response, self.settings, COOKIE, token, max_age=max_age)
        return response

    def _session_cookie(
        self, principal: Principal, extra: dict[str, Any], *, status: str | None = None
    ) -> Response:
        """A fresh JWT for the caller's own session, in the body and the cookie."""
        token = self._jwt(principal.user, principal.session.id)
        body = {"status": status or _status(principal.user), **extra, "token": token}
        return self._with_cookie(body, token, remember=principal.session.remember)


DIALECT = BrowsaryDialect
