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
POST /verify/request, POST /verify/submit, POST /reset/request, POST /reset/submit; and
GET /api (root) beside the prefix.

Deliberate deviations (security):
- Passwords use authql's argon2id, lockout and rate limits (the library's default is an
  unsalted SHA-256); a locked account answers 423 and a spent rate limit 429, both with
  Retry-After, in Browsary's error shape.
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
  (sessions only exist once every factor passed), so ``2fa_required`` is not answered yet.
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
  other-purpose token is 400. Its ``status`` follows the email as login's does: a reset
  does not verify the address, so an unverified account gets ``email_not_verified`` (with
  the token and cookie).

Not served yet (404): 2fa/*, external/*.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from authql.errors import AuthError, ErrorCode, ValidationFailed
from authql.resolvers import accounts, recovery, sessions, verification
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
from authql.views import UserView

COOKIE = "token"
ROOT_SERVICE = "browsary::root"
ROOT_VERSION = "2024-05-01"

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


def _info(user: UserView) -> dict[str, Any]:
    """The library's ``info`` object for a signed-in user."""
    return {
        "id": user.id,
        "email": user.email,
        "emailVerified": user.email_verified,
        "twoFactorConfigured": user.two_factor_enabled,
        "twoFactorPassed": True,
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


class BrowsaryDialect(Dialect):
    name = "browsary"
    title = "Browsary"
    transport = BearerTransport(cookie=COOKIE)

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("GET", "", self.status, "Session status: ok, email_not_verified or auth null"),
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
        if view.claims is None or principal is None:
            return json_response({"status": "ok", "auth": None})
        auth = {**view.claims, "info": _info(principal.user)}
        return json_response({"status": _status(principal.user), "auth": auth})

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
        return self._signed_in(request, outcome, remember=remember, cookie=remember)

    async def login(self, request: DialectRequest) -> Response:
        email = await request.require("email")
        password = await request.require("password")
        remember = await request.flag("remember")
        outcome = await sessions.login(
            request.context, identifier=email, password=password, remember=remember
        )
        return self._signed_in(request, outcome, remember=remember, cookie=True)

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
        return self._signed_in(request, outcome, remember=False, cookie=True)

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
        return self._signed_in(request, outcome, remember=False, cookie=True)

    async def root(self, request: DialectRequest) -> Response:
        principal = request.context.principal
        subject: Any = "public"
        if principal is not None:
            subject = {"id": principal.user.id, "email": principal.user.email}
        return json_response({"service": ROOT_SERVICE, "version": ROOT_VERSION, "subject": subject})

    # --- rendering -------------------------------------------------------------------------

    def _signed_in(
        self, request: DialectRequest, outcome: AuthOutcome, *, remember: bool, cookie: bool
    ) -> Response:
        """``{status, token}`` (+ the cookie), or ``{status:'email_not_verified'}`` when the
        resolver withheld tokens until the email is verified."""
        if outcome.status is AuthStatus.EMAIL_NOT_VERIFIED or outcome.session is None:
            return json_response({"status": "email_not_verified"})
        assert outcome.user is not None
        ttl = self.settings.refresh_token_ttl
        token = self.services.access_tokens.issue(
            user_id=outcome.user.id,
            session_id=outcome.session.id,
            roles=list(outcome.user.roles),
            now=self.services.clock.now().timestamp(),
            ttl=ttl,
        )
        response = json_response({"status": _status(outcome.user), "token": token})
        if cookie:
            set_cookie(response, self.settings, COOKIE, token, max_age=ttl if remember else None)
        return response


DIALECT = BrowsaryDialect
