"""AuthCore (npm ``codalware-auth``: Next.js + NextAuth + Prisma) over authql's resolvers.

Docs: https://authcore-liard.vercel.app/api-reference/authentication and
``/api-reference/overview`` (shapes partly inferred: the docs' JSON examples were not
captured; see DIALECTS.md section 3). Native prefix ``/api/auth``.

Transport: the NextAuth-style session cookie ``authcore.session-token`` (``__Secure-``
prefixed when the public URL is https) holding an authql opaque session token (only its
digest is stored); HttpOnly, SameSite=Lax, Path=/, Max-Age = the session lifetime
(``refresh_token_ttl``). Server-to-server callers may send ``Authorization: Bearer <access
token>`` instead (tried when no live cookie is present). The NextAuth double-submit CSRF
cookie ``authcore.csrf-token`` (``__Host-`` prefixed under https) guards sign-in and
sign-out. Envelope: ``{success:true, data}`` / ``{success:false, error:{message, code}}``;
the NextAuth routes answer in NextAuth's own shapes (``{csrfToken}``, ``{url}``, the session
object). Rate limits [doc]: authRoute routes (register, check-2fa, signin/callback
credentials, magic-link, verify-email, resend-verification, forgot-password,
reset-password) spend ``authcore_auth`` (5 / 15 min / ip); publicRoute read-only routes
(policy, csrf, providers, session) spend ``authcore_public`` (20 / min / ip); 429 carries
Retry-After and RateLimit-* headers. ``GET /verify`` (the emailed link) spends only
authql's own ``verify_ip`` budget.

Mail routes: ``POST /magic-link {email, callbackUrl?}`` and ``POST /resend-verification
{email}`` and ``POST /forgot-password {email}`` always answer 200 ``{success:true}`` (same
body, status and timing for unknown, verified or unverified accounts; the mail is sent in
the background). ``GET /verify?token=[&callbackUrl=]`` redeems a magic link: sets the
session cookie and 302s to ``callbackUrl`` or ``/demo/dashboard`` [doc]. ``POST
/verify-email {token}`` answers ``{success:true, data:{user}}`` (no sign-in); ``POST
/reset-password {token, password}`` answers ``{success:true}`` (no sign-in; every session
of the account ends and this request's session cookie, if any, is cleared).

Two-factor routes (all need the session, or a Bearer access token): ``GET /2fa/setup`` ->
``{success:true, data:{enabled, backupCodesCount}}`` (mfa.two_factor_status); ``POST
/2fa/setup`` -> ``{success:true, data:{secret, qrCode, otpauthUrl}}`` (mfa.begin_totp_setup);
``POST /2fa/verify {token}`` -> enables 2FA, ``{success:true, data:{backupCodes}}``
(mfa.confirm_totp_setup); ``POST /2fa/disable {token}`` -> ``{success:true}``
(mfa.disable_two_factor); ``POST /2fa/backup-codes {token}`` -> ``{success:true,
data:{backupCodes}}`` (mfa.regenerate_backup_codes). A wrong or replayed code is 400
``INVALID_TOKEN``; a missing one 400 ``VALIDATION_ERROR`` (``fields.token``); disable or
backup-codes with 2FA off, or ``/2fa/verify`` before ``POST /2fa/setup``, 400
``VALIDATION_ERROR``; disable while ``require_two_factor`` is on, 403 ``FORBIDDEN``. Like
upstream's protectedRoute they have no dialect rate limit; authql's per-ip code budget
applies.

Sign-in with 2FA on (``signin/credentials`` and ``callback/credentials``): the NextAuth
credentials provider takes the second factor with the credentials, as AuthCore's UI does
(``check-2fa`` first, then email + password + code), in ``totpCode`` (or ``code`` /
``token``). With a code the challenge that the password opened is completed in the same
request (mfa.verify_two_factor; six digits are a TOTP code, anything else a backup code)
and the session cookie is set. Without one: ``{url: <prefix>/error?error=TwoFactorRequired}``
with 401 (302 for form posts), no cookie; a wrong, replayed or used code: ``error=
InvalidTwoFactorCode``, 401 / 302. Wrong codes count toward the account lockout (then 423).

OAuth routes (``authql.rest_compat.authcore_oauth``, whose docstring lists their answers,
deviations and inferred choices): ``GET /providers`` lists the configured providers beside
``credentials``; ``POST /signin/{provider}`` (CSRF token) redirects to the provider and
``GET /callback/{provider}`` sets the session cookie and redirects to the callbackUrl, or to
``<prefix>/error?error=`` ``OAuthAccountNotLinked`` / ``TwoFactorRequired`` /
``OAuthCallback`` and the like.

Deliberate deviations (security):
- ``POST /2fa/setup`` answers no backup codes (upstream returns them with the secret):
  nothing is active until ``/2fa/verify`` confirms a code from the app, and the ten backup
  codes come from that answer, shown once. ``/2fa/verify`` confirms the secret stored as
  pending by the latest ``POST /2fa/setup`` (a client-sent secret is never trusted). With
  2FA already on, ``POST /2fa/setup`` needs a current code in ``token`` and then replaces
  the authenticator once ``/2fa/verify`` confirms the new one (mfa.reset_totp; the old one
  works until then); without it, 400 ``VALIDATION_ERROR`` (``fields.token``).
- Disable and backup-codes take a current TOTP or an unused backup code [doc]; a TOTP code
  (its 30-second step) works once per account, so the code that just signed in or
  confirmed the setup is refused as a replay.
- Turning 2FA on ends every other session of the account; the current one stays.
- The magic link (``GET /verify``) cannot complete 2FA in AuthCore's flow (it carries no
  code): for an account with 2FA on it signs nobody in (see below); sign in with the
  password and a code instead.
- ``check-2fa`` never looks at the password (accepted and ignored) and answers unknown
  accounts like accounts without a factor: no enumeration, no password oracle.
- ``callbackUrl`` may only be a relative path, the public URL's origin, or an entry of
  ``allowed_redirects``; on sign-in/sign-out and ``GET /verify`` anything else silently
  becomes the default target (as NextAuth's default redirect callback does for foreign
  origins); on ``POST /magic-link`` it is 400 VALIDATION_ERROR (``fields.callbackUrl``).
  Never an open redirect. The callbackUrl carried by a magic link is checked again when the
  link is used (instead of upstream's signature over it), so an edited link cannot redirect
  elsewhere.
- Magic-link, verification and reset tokens are authql's: 256-bit, stored as digests,
  single use, purpose-bound, expiring (magic link 15 min, reset 1 h, verification per
  ``email_verification_ttl``); a resend kills the earlier link.
- The cookie carries a revocable authql session, not a NextAuth JWE: a session revoked on any
  surface is refused at once. Bearer accepts authql access tokens only (never challenge
  tokens).
- Sign-in lockout, rate limits and malformed input answer in the error envelope (423 / 429
  with Retry-After / 400) instead of NextAuth's generic error redirect; a bad CSRF token is
  403 FORBIDDEN instead of NextAuth's redirect to ``/signin?csrf=true``.

[inferred] choices:
- Statuses: VALIDATION_ERROR, INVALID_TOKEN 400; UNAUTHORIZED, INVALID_CREDENTIALS 401;
  FORBIDDEN, EMAIL_NOT_VERIFIED, TWO_FACTOR_REQUIRED 403; NOT_FOUND 404; CONFLICT 409;
  ACCOUNT_LOCKED 423; RATE_LIMITED 429; PROVIDER_ERROR and INTERNAL 500. ``error.fields``
  ({field: message}) is added when an error names fields (password policy, taken email).
- Register takes ``{email, password, name?, firstName?, lastName?, username?,
  tenantDomain?, tenantSlug?}`` and answers 201 ``{user, steps}``. ``steps`` lists what the
  new account must still do, in the order the user meets them, from the sign-up policy
  (``authql.resolvers.policy``): ``verify_email`` (the policy requires a verified
  address), ``await_approval`` (registration needs an admin's approval; sign-in is 403
  FORBIDDEN until then), ``setup_2fa`` (the policy requires 2FA: the first sign-in
  answers TwoFactorSetupRequired); ``[]`` when none. A closed registration, or a password
  where the tenant allows no passwords, is 403 FORBIDDEN; password rules and a breached
  password are 400 VALIDATION_ERROR with ``fields.password``; a tenant that does not
  match the address (``tenantDomain`` / ``tenantSlug`` / ``email``) 400 too. The user
  object: id, email, name, firstName, lastName, username, image (null), emailVerified (a
  boolean; NextAuth's Prisma adapter stores a date), twoFactorEnabled, roles, createdAt.
- ``GET /policy?tenantDomain=<domain or email>`` (or ``?tenantSlug=``; public, spends
  ``authcore_public``) answers ``{success:true, data}`` with ``buildAuthFlowPolicy``'s
  parts: ``tenant`` (``{slug, name}``, null for the server-wide policy, which unknown
  domains and slugs also get), ``login`` (``methods``: the allowed ways in this server
  serves, ``password`` | ``magic-link`` | ``sms`` | ``oauth:<provider>``; and the
  booleans ``password``, ``magicLink``, ``sms`` plus ``oauth``: provider names),
  ``registration`` (``mode`` open | closed | approval, ``open``, ``requiresApproval``,
  ``passwordless``: whether sign-up may omit the password), ``mfa`` (``required``,
  ``methods`` sign-in takes: ``totp``, ``backup_code``), ``emailVerification``
  (``required``), ``password`` (``minLength``, ``maxLength``, ``rules``: required
  character classes, ``breachCheck``: whether breached passwords are refused).
- check-2fa methods are the factors sign-in takes, authql's names lower-cased (``totp``,
  ``backup_code``). Texted or mailed codes cannot serve here: authql binds them to one
  challenge, and each sign-in request opens a new one.
- ``qrCode`` is a PNG data URI (``data:image/png;base64,...``) for an ``<img src>``.
- 2FA route codes go in ``token`` (also ``totpCode`` / ``code``). Backup codes are
  authql's (``xxxx-xxxx``).
- Setup required by policy (``require_two_factor``, account without a factor): sign-in
  answers ``{url: <prefix>/error?error=TwoFactorSetupRequired}`` with 403 (302 for forms)
  and sets the setup challenge in the HttpOnly cookie ``authcore.2fa-setup`` (``__Secure-``
  prefixed under https; Path ``<prefix>/2fa``, Max-Age 300, SameSite=Lax). With it and no
  session, ``POST /2fa/setup`` and ``POST /2fa/verify`` enrol TOTP (and only that: no
  other route accepts it, and it is never a session); ``/2fa/verify`` clears the cookie,
  and the user then signs in with the password and the authenticator's next code (or a
  backup code).
- Provider and error URLs are prefix-relative paths (NextAuth answers absolute URLs).
- Failed sign-in: ``{url: <prefix>/error?error=CredentialsSignin}`` with 401 for JSON callers
  (302 there for form posts); an unverified email (when verification is required) gives
  ``error=EmailNotVerified`` with 403; a missing second factor ``error=TwoFactorRequired``
  and a wrong one ``error=InvalidTwoFactorCode`` with 401 (the status NextAuth gives an
  error thrown by ``authorize``).
- CSRF cookie value ``<token>|<HMAC-SHA256(secret_key, token)>``, a browser-session cookie;
  a valid one is reused by ``GET /csrf`` (as NextAuth does).
- ``GET /session`` reports the session's absolute expiry (no NextAuth sliding ``updateAge``)
  and clears a dead session cookie; ``POST /signout`` works without a session (NextAuth).
- Mail links: the magic link is ``<public URL><prefix>/verify?callbackUrl=<url>&token=``
  (callbackUrl only when given); the verification link opens ``<public URL>/verify-email
  ?token=`` and the reset link ``<public URL>/reset-password?token=`` (the app's pages, which
  POST the token to ``verify-email`` / ``reset-password``). None of these routes takes a
  return URL of its own.
- ``GET /verify`` with a missing, unknown, used or expired token 302s to ``<prefix>/error
  ?error=Verification`` (NextAuth's email-sign-in error); a caller whose ``Accept`` asks for
  JSON (and not HTML) gets 400 ``INVALID_TOKEN`` in the envelope instead, and on success
  200 ``{success:true, data:{user, url}}`` with the cookie. For an account with 2FA on, a
  good link signs nobody in (no second factor was given): 302 to ``<prefix>/error
  ?error=TwoFactorRequired`` (JSON callers: 403 ``TWO_FACTOR_REQUIRED``); the link is spent
  and the email counts as verified. The link cannot take the second factor: the user signs
  in with the password and a code.
- ``reset-password`` also accepts ``newPassword`` for ``password``; reset and verify-email
  answer 400 ``INVALID_TOKEN`` for any bad token (used, unknown, expired, wrong purpose).
- Register sends no verification mail by itself: the client calls ``resend-verification``
  (``steps`` still lists ``verify_email`` when verification is required).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authql.context import RequestContext, authenticate, authenticate_session_token, bearer_token
from authql.errors import (
    AccountSoftDeleted,
    AuthError,
    ErrorCode,
    Forbidden,
    InvalidCredentials,
    InvalidToken,
    TwoFactorRequired,
    ValidationFailed,
)
from authql.resolvers import (
    accounts,
    meta,
    mfa,
    passwordless,
    policy,
    recovery,
    sessions,
    verification,
)
from authql.resolvers.challenges import CHALLENGE_TTL
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.rest_compat._base import (
    DialectRequest,
    Endpoint,
    SessionCookieTransport,
    clear_cookie,
    json_response,
    set_cookie,
)
from authql.rest_compat.authcore_lifecycle import AuthCoreLifecycleRoutes
from authql.rest_compat.authcore_oauth import AuthCoreOAuthRoutes
from authql.settings import Settings
from authql.views import UserView

SESSION_COOKIE = "authcore.session-token"
CSRF_COOKIE = "authcore.csrf-token"
#: Carries a setup challenge (2FA required by policy) to ``/2fa/setup`` and ``/2fa/verify``.
SETUP_COOKIE = "authcore.2fa-setup"
#: Where sign-in looks for the second factor, and the 2FA routes for the current code.
_CODE_FIELDS = ("totpCode", "code", "token")
#: authql's factors that AuthCore's one-request sign-in can take (check-2fa lists these).
_SIGN_IN_FACTORS = ("TOTP", "BACKUP_CODE")
_CSRF_PATHS = frozenset(
    {"/signin/credentials", "/callback/credentials", "/signout", "/signin/{provider}"}
)
#: Where ``GET /verify`` sends a signed-in user when the link carries no callbackUrl [doc].
DEFAULT_VERIFY_REDIRECT = "/demo/dashboard"
#: The app pages (under the public URL) that verification and reset mails open [inferred].
VERIFY_EMAIL_PAGE = "/verify-email"
RESET_PASSWORD_PAGE = "/reset-password"

_STATUS: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.INVALID_TOKEN: 400,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.EMAIL_NOT_VERIFIED: 403,
    ErrorCode.TWO_FACTOR_REQUIRED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.ACCOUNT_LOCKED: 423,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.PROVIDER_ERROR: 500,
    ErrorCode.INTERNAL: 500,
}


def session_cookie_name(settings: Settings) -> str:
    """NextAuth's session cookie name, ``__Secure-`` prefixed under https."""
    return f"__Secure-{SESSION_COOKIE}" if settings.secure_cookies else SESSION_COOKIE


def csrf_cookie_name(settings: Settings) -> str:
    """NextAuth's CSRF cookie name, ``__Host-`` prefixed under https."""
    return f"__Host-{CSRF_COOKIE}" if settings.secure_cookies else CSRF_COOKIE


def setup_cookie_name(settings: Settings) -> str:
    """The setup-challenge cookie's name, ``__Secure-`` prefixed under https."""
    return f"__Secure-{SETUP_COOKIE}" if settings.secure_cookies else SETUP_COOKIE


def flow_policy_json(view: policy.PublicPolicy) -> dict[str, Any]:
    """``buildAuthFlowPolicy``'s answer, as authql infers it (see the module docstring)."""
    methods = view.login_methods
    tenant = {"slug": view.tenant, "name": view.tenant_name} if view.tenant else None
    return {
        "tenant": tenant,
        "login": {
            "methods": methods,
            "password": "password" in methods,
            "magicLink": "magic-link" in methods,
            "sms": "sms" in methods,
            "oauth": [method[len("oauth:") :] for method in methods if method.startswith("oauth:")],
        },
        "registration": {
            "mode": view.registration,
            "open": view.registration_open,
            "requiresApproval": view.approval_required,
            "passwordless": view.passwordless_sign_up,
        },
        "mfa": {
            "required": view.require_two_factor,
            "methods": [factor.lower() for factor in _SIGN_IN_FACTORS],
        },
        "emailVerification": {"required": view.require_email_verification},
        "password": {
            "minLength": view.password_min_length,
            "maxLength": view.password_max_length,
            "rules": view.password_rules,
            "breachCheck": view.breach_check,
        },
    }


def user_json(user: UserView) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "username": user.username,
        "image": None,
        "emailVerified": user.email_verified,
        "twoFactorEnabled": user.two_factor_enabled,
        "roles": list(user.roles),
        "createdAt": _iso(user.created_at),
    }


def _iso(moment: Any) -> str:
    """JavaScript's ``toISOString()`` form: UTC, milliseconds, ``Z``."""
    return str(moment.isoformat(timespec="milliseconds")).replace("+00:00", "Z")


def _same(left: str, right: str) -> bool:
    """Constant-time equality that also takes non-ASCII input (a 403, never a 500)."""
    return hmac.compare_digest(left.encode(), right.encode())


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True)
class AuthCoreTransport(SessionCookieTransport):
    """The session cookie first, then ``Authorization: Bearer <access token>``."""

    cookie: str = SESSION_COOKIE

    async def authenticate(self, request: Request, context: RequestContext) -> None:
        context.session_transport = True
        token = request.cookies.get(session_cookie_name(context.services.settings))
        if token and await authenticate_session_token(context, token):
            return
        access_token = bearer_token(request.headers.get("authorization"))
        if access_token:
            await authenticate(context, access_token)


class AuthCoreDialect(AuthCoreOAuthRoutes, AuthCoreLifecycleRoutes):
    name = "authcore"
    title = "AuthCore"
    transport = AuthCoreTransport()

    def endpoints(self) -> list[Endpoint]:
        auth, public = "authcore_auth", "authcore_public"
        profile = (
            "email",
            "password",
            "name",
            "firstName",
            "lastName",
            "username",
            "tenantDomain",
            "tenantSlug",
        )
        credentials = dict.fromkeys(("email", "password", "csrfToken", "callbackUrl"), "string")
        sign_in = [
            Endpoint(
                "POST",
                path,
                self.sign_in,
                "NextAuth credentials sign-in: session cookie, then {url} or 302",
                body={**credentials, "totpCode": "string", "json": "boolean"},
                required=("email", "password", "csrfToken"),
                rate_limit=auth,
            )
            for path in ("/signin/credentials", "/callback/credentials")
        ]
        return [
            Endpoint(
                "POST",
                "/register",
                self.register,
                "Create an account; answers the steps it must still complete",
                body=dict.fromkeys(profile, "string"),
                required=("email", "password"),
                status=201,
                rate_limit=auth,
            ),
            Endpoint(
                "POST",
                "/check-2fa",
                self.check_two_factor,
                "Preflight: whether signing in will ask for a second factor",
                body={"email": "string", "password": "string"},
                required=("email",),
                rate_limit=auth,
            ),
            Endpoint(
                "GET",
                "/policy",
                self.flow_policy,
                "The sign-in policy for a tenant: login options, MFA, approval rules",
                query={"tenantDomain": "string", "tenantSlug": "string"},
                rate_limit=public,
            ),
            Endpoint("GET", "/csrf", self.csrf, "NextAuth CSRF token", rate_limit=public),
            Endpoint("GET", "/providers", self.providers, "NextAuth providers", rate_limit=public),
            *sign_in,
            *self.oauth_endpoints(),
            Endpoint(
                "GET",
                "/session",
                self.session,
                "NextAuth session: {user, expires}, or {} when signed out",
                rate_limit=public,
            ),
            Endpoint(
                "POST",
                "/signout",
                self.sign_out,
                "NextAuth sign-out: revokes the session, clears the cookie",
                body={"csrfToken": "string", "callbackUrl": "string", "json": "boolean"},
                required=("csrfToken",),
            ),
            Endpoint(
                "POST",
                "/magic-link",
                self.magic_link,
                "Mail a single-use sign-in link (always 200)",
                body={"email": "string", "callbackUrl": "string"},
                required=("email",),
                rate_limit=auth,
            ),
            Endpoint(
                "GET",
                "/verify",
                self.verify,
                "Redeem a magic link: session cookie, then 302 to callbackUrl",
                query={"token": "string", "callbackUrl": "string"},
                status=302,
            ),
            Endpoint(
                "POST",
                "/verify-email",
                self.verify_email,
                "Mark the email verified from an emailed token",
                body={"token": "string"},
                required=("token",),
                rate_limit=auth,
            ),
            Endpoint(
                "POST",
                "/resend-verification",
                self.resend_verification,
                "Mail a new verification link (always 200)",
                body={"email": "string"},
                required=("email",),
                rate_limit=auth,
            ),
            Endpoint(
                "POST",
                "/forgot-password",
                self.forgot_password,
                "Mail a password reset link (always 200)",
                body={"email": "string"},
                required=("email",),
                rate_limit=auth,
            ),
            Endpoint(
                "POST",
                "/reset-password",
                self.reset_password,
                "Set a new password from an emailed token; every session ends",
                body={"token": "string", "password": "string"},
                required=("token", "password"),
                rate_limit=auth,
            ),
            *self._two_factor_endpoints(),
            *self.lifecycle_endpoints(),
        ]

    def _two_factor_endpoints(self) -> list[Endpoint]:
        code = {"token": "string"}
        return [
            Endpoint(
                "GET",
                "/2fa/setup",
                self.two_factor_status,
                "2FA status: {enabled, backupCodesCount}",
                authenticated=True,
            ),
            Endpoint(
                "POST",
                "/2fa/setup",
                self.two_factor_setup,
                "Start authenticator enrolment: secret, PNG QR data URI and otpauth URL, enforced "
                "only after /2fa/verify (with 2FA on, a current code in token replaces it)",
                authenticated=True,
                body=code,
            ),
            Endpoint(
                "POST",
                "/2fa/verify",
                self.two_factor_verify,
                "Confirm the pending secret with a code: enables 2FA, returns backup codes",
                authenticated=True,
                body=code,
                required=("token",),
            ),
            Endpoint(
                "POST",
                "/2fa/disable",
                self.two_factor_disable,
                "Turn 2FA off (needs a current authenticator or backup code)",
                authenticated=True,
                body=code,
                required=("token",),
            ),
            Endpoint(
                "POST",
                "/2fa/backup-codes",
                self.backup_codes,
                "Ten new backup codes, the old ones die (needs a current code)",
                authenticated=True,
                body=code,
                required=("token",),
            ),
        ]

    def render_error(self, error: AuthError) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"message": error.message, "code": error.code.value}
        if isinstance(error, AccountSoftDeleted):  # 409, as AuthCore documents
            body["message"] = "This account was deleted and can still be restored."
            body["code"] = "USER_SOFT_DELETED"
        if error.code is ErrorCode.INTERNAL:
            body["message"] = "Internal server error"
        elif error.fields:
            body["fields"] = dict(error.fields)
        return _STATUS[error.code], {"success": False, "error": body}

    def openapi(self) -> dict[str, Any]:
        document = super().openapi()
        document["components"]["securitySchemes"]["bearer"] = {"type": "http", "scheme": "bearer"}
        return document

    # --- AuthCore routes -------------------------------------------------------------------

    async def register(self, request: DialectRequest) -> Response:
        outcome = await accounts.register(
            request.context,
            email=await request.string("email", required=False) or "",
            password=await request.string("password", required=False),
            name=await request.string("name", required=False),
            first_name=await request.string("firstName", required=False),
            last_name=await request.string("lastName", required=False),
            username=await request.string("username", required=False),
            sign_in=False,
            tenant=await request.string("tenantSlug", required=False),
            tenant_domain=await request.string("tenantDomain", required=False),
        )
        assert outcome.user is not None
        steps = await policy.next_steps(request.context, user_id=outcome.user.id)
        data = {"user": user_json(outcome.user), "steps": steps}
        return json_response({"success": True, "data": data}, 201)

    async def flow_policy(self, request: DialectRequest) -> Response:
        view = await policy.tenant_policy(
            request.context,
            domain=request.query("tenantDomain"),
            slug=request.query("tenantSlug"),
        )
        return json_response({"success": True, "data": flow_policy_json(view)})

    async def check_two_factor(self, request: DialectRequest) -> Response:
        view = await mfa.check_two_factor(
            request.context, identifier=await request.require("email")
        )
        data = {
            "requires2FA": view.requires_two_factor,
            "methods": [method.lower() for method in view.methods if method in _SIGN_IN_FACTORS],
        }
        return json_response({"success": True, "data": data})

    # --- NextAuth routes -------------------------------------------------------------------

    async def csrf(self, request: DialectRequest) -> Response:
        token = self._csrf_from_cookie(request.request) or secrets.token_hex(32)
        response = json_response({"csrfToken": token})
        value = f"{token}|{self._csrf_mac(token)}"
        set_cookie(response, self.settings, csrf_cookie_name(self.settings), value, max_age=None)
        return response

    async def providers(self, request: DialectRequest) -> Response:
        views = meta.auth_providers(request.context)
        offered = {provider.kind for provider in views}
        credentials = {
            "id": "credentials",
            "name": "Credentials",
            "type": "credentials",
            "signinUrl": self.url("/signin/credentials"),
            "callbackUrl": self.url("/callback/credentials"),
        }
        body = {"credentials": credentials} if "password" in offered else {}
        return json_response(body | self.oauth_providers(views))

    async def sign_in(self, request: DialectRequest) -> Response:
        email = await request.require("email")
        password = await request.require("password")
        code = await request.string(_CODE_FIELDS[0], required=False, aliases=_CODE_FIELDS[1:])
        target = self._callback_url(await request.string("callbackUrl", required=False))
        as_json = await self._wants_json(request)
        try:
            outcome = await sessions.login(request.context, identifier=email, password=password)
        except InvalidCredentials:
            return self._navigate(self.url("/error?error=CredentialsSignin"), as_json, 401)
        if outcome.status is AuthStatus.TWO_FACTOR_SETUP_REQUIRED:
            return self._setup_required(outcome, as_json)
        if outcome.status is AuthStatus.TWO_FACTOR_REQUIRED:
            if not code:
                return self._navigate(self.url("/error?error=TwoFactorRequired"), as_json, 401)
            assert outcome.challenge_token is not None
            try:
                outcome = await mfa.verify_two_factor(
                    request.context,
                    challenge_token=outcome.challenge_token,
                    code=code,
                    method="TOTP" if _totp_shaped(code) else "BACKUP_CODE",
                )
            except InvalidToken:
                return self._navigate(self.url("/error?error=InvalidTwoFactorCode"), as_json, 401)
        if outcome.status is AuthStatus.EMAIL_NOT_VERIFIED:
            return self._navigate(self.url("/error?error=EmailNotVerified"), as_json, 403)
        assert outcome.status is AuthStatus.OK and outcome.session_token is not None
        response = self._navigate(target, as_json, 200)
        self._set_session_cookie(response, outcome.session_token)
        return response

    async def session(self, request: DialectRequest) -> Response:
        principal = request.context.principal
        if principal is None:
            response = json_response({})
            cookie = session_cookie_name(self.settings)
            if request.context.credential_rejected and cookie in request.request.cookies:
                clear_cookie(response, self.settings, cookie)
            return response
        user = principal.user
        body = {
            "user": {
                "id": user.id,
                "email": user.email,
                "name": user.name,
                "image": None,
                "roles": list(user.roles),
                "emailVerified": user.email_verified,
            },
            "expires": _iso(principal.session.expires_at),
        }
        return json_response(body)

    async def sign_out(self, request: DialectRequest) -> Response:
        target = self._callback_url(await request.string("callbackUrl", required=False))
        as_json = await self._wants_json(request)
        if request.context.principal is not None:
            await sessions.logout(request.context)
        response = self._navigate(target, as_json, 200)
        clear_cookie(response, self.settings, session_cookie_name(self.settings))
        return response

    def _set_session_cookie(self, response: Response, session_token: str) -> None:
        """The session cookie, living as long as the session may."""
        set_cookie(
            response,
            self.settings,
            session_cookie_name(self.settings),
            session_token,
            max_age=self.settings.refresh_token_ttl,
        )

    def _setup_required(self, outcome: AuthOutcome, as_json: bool) -> Response:
        """NextAuth's error answer, plus the setup challenge in a cookie scoped to /2fa."""
        assert outcome.challenge_token is not None
        response = self._navigate(self.url("/error?error=TwoFactorSetupRequired"), as_json, 403)
        set_cookie(
            response,
            self.settings,
            setup_cookie_name(self.settings),
            outcome.challenge_token,
            max_age=CHALLENGE_TTL,
            path=self.url("/2fa"),
        )
        return response

    # --- 2FA routes --------------------------------------------------------------------------

    async def two_factor_status(self, request: DialectRequest) -> Response:
        view = await mfa.two_factor_status(request.context)
        data = {"enabled": view.enabled, "backupCodesCount": view.backup_codes_remaining}
        return json_response({"success": True, "data": data})

    async def two_factor_setup(self, request: DialectRequest) -> Response:
        challenge = self._setup_challenge(request)
        code = await request.string("token", required=False, aliases=_CODE_FIELDS[:2])
        try:
            view = await mfa.begin_totp_setup(request.context, challenge_token=challenge)
        except ValidationFailed:  # 2FA is on already (nothing was written)
            if challenge is not None or not code:
                raise ValidationFailed(
                    "Two-factor authentication is already enabled; send a current code to "
                    "replace the authenticator.",
                    fields={"token": "Required."},
                ) from None
            view = await mfa.reset_totp(request.context, code=code)
        data = {"secret": view.secret, "qrCode": view.qr_code_png, "otpauthUrl": view.otpauth_url}
        return json_response({"success": True, "data": data})

    async def two_factor_verify(self, request: DialectRequest) -> Response:
        challenge = self._setup_challenge(request)
        backup_codes = await mfa.confirm_totp_setup(
            request.context,
            code=await request.require("token", aliases=_CODE_FIELDS[:2]),
            challenge_token=challenge,
        )
        response = json_response({"success": True, "data": {"backupCodes": backup_codes}})
        if challenge is not None:
            clear_cookie(
                response, self.settings, setup_cookie_name(self.settings), path=self.url("/2fa")
            )
        return response

    async def two_factor_disable(self, request: DialectRequest) -> Response:
        await mfa.disable_two_factor(
            request.context, code=await request.require("token", aliases=_CODE_FIELDS[:2])
        )
        return json_response({"success": True})

    async def backup_codes(self, request: DialectRequest) -> Response:
        backup_codes = await mfa.regenerate_backup_codes(
            request.context, code=await request.require("token", aliases=_CODE_FIELDS[:2])
        )
        return json_response({"success": True, "data": {"backupCodes": backup_codes}})

    def _setup_challenge(self, request: DialectRequest) -> str | None:
        """The setup challenge from the cookie, used only when no session is present."""
        if request.context.principal is not None:
            return None
        return request.request.cookies.get(setup_cookie_name(self.settings)) or None

    # --- mail routes -------------------------------------------------------------------------

    async def magic_link(self, request: DialectRequest) -> Response:
        email = await request.require("email")
        callback = self._checked_callback(await request.string("callbackUrl", required=False))
        base = self._absolute(self.url("/verify"))
        if callback:
            base += "?" + urlencode({"callbackUrl": callback})
        await passwordless.send_magic_link(request.context, email=email, link_base=base)
        return json_response({"success": True})

    async def verify(self, request: DialectRequest) -> Response:
        as_json = _accepts_json(request.request)
        try:
            outcome = await passwordless.verify_magic_link(
                request.context, token=request.query("token") or ""
            )
        except InvalidToken as error:
            if as_json:
                return self.error_response(error)
            return self._navigate(self.url("/error?error=Verification"), False, 302)
        if outcome.session_token is None:
            # 2FA on: the link proved the mailbox only; the password + code sign-in remains.
            if as_json:
                return self.error_response(TwoFactorRequired())
            return self._navigate(self.url("/error?error=TwoFactorRequired"), False, 302)
        assert outcome.user is not None
        target = self._callback_url(request.query("callbackUrl"), DEFAULT_VERIFY_REDIRECT)
        if as_json:
            data = {"user": user_json(outcome.user), "url": target}
            response: Response = json_response({"success": True, "data": data})
        else:
            response = self._navigate(target, False, 302)
        self._set_session_cookie(response, outcome.session_token)
        return response

    async def verify_email(self, request: DialectRequest) -> Response:
        outcome = await verification.verify_email(
            request.context, token=await request.require("token"), sign_in=False
        )
        assert outcome.user is not None
        return json_response({"success": True, "data": {"user": user_json(outcome.user)}})

    async def resend_verification(self, request: DialectRequest) -> Response:
        await verification.resend_verification(
            request.context,
            email=await request.require("email"),
            link_base=self._absolute(VERIFY_EMAIL_PAGE),
        )
        return json_response({"success": True})

    async def forgot_password(self, request: DialectRequest) -> Response:
        await recovery.request_password_reset(
            request.context,
            identifier=await request.require("email"),
            link_base=self._absolute(RESET_PASSWORD_PAGE),
        )
        return json_response({"success": True})

    async def reset_password(self, request: DialectRequest) -> Response:
        await recovery.reset_password(
            request.context,
            token=await request.require("token"),
            password=await request.require("password", aliases=("newPassword",)),
            sign_in=False,
        )
        response = json_response({"success": True})
        cookie = session_cookie_name(self.settings)
        if cookie in request.request.cookies:
            clear_cookie(response, self.settings, cookie)
        return response

    # --- helpers ---------------------------------------------------------------------------

    async def before(self, request: DialectRequest, endpoint: Endpoint) -> None:
        """NextAuth's double-submit check on sign-in and sign-out."""
        if endpoint.path not in _CSRF_PATHS:
            return
        expected = self._csrf_from_cookie(request.request)
        sent = await request.string("csrfToken", required=False)
        if expected is None or sent is None or not _same(expected, sent):
            raise Forbidden("CSRF token missing or invalid.")

    def _csrf_mac(self, token: str) -> str:
        key = self.settings.secret_key.encode()
        return hmac.new(key, f"authcore-csrf:{token}".encode(), hashlib.sha256).hexdigest()

    def _csrf_from_cookie(self, request: Request) -> str | None:
        """The token of a CSRF cookie this server signed, else None."""
        token, _, mac = request.cookies.get(csrf_cookie_name(self.settings), "").partition("|")
        if token and mac and _same(mac, self._csrf_mac(token)):
            return token
        return None

    def _callback_url(self, raw: str | None, default: str | None = None) -> str:
        """``raw`` if it stays on this site or an allowed target, else ``default`` (the
        public URL unless given)."""
        return raw if raw and self._safe(raw) else default or self.settings.public_url

    def _checked_callback(self, raw: str | None) -> str | None:
        """``raw`` when it is a safe target, None when absent, else VALIDATION_ERROR."""
        if not raw:
            return None
        if not self._safe(raw):
            raise ValidationFailed(
                "callbackUrl not allowed.", fields={"callbackUrl": "Not an allowed URL."}
            )
        return raw

    def _safe(self, raw: str) -> bool:
        """A relative path, the public URL's origin, or an ``allowed_redirects`` entry."""
        if any(ord(char) < 0x20 or char == "\\" for char in raw):
            return False
        if raw.startswith("/") and not raw.startswith("//"):
            return True
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
            return False
        allowed = {entry.rstrip("/") for entry in self.settings.allowed_redirects if entry}
        origins = {_origin(self.settings.public_url)}
        origins |= {e.lower() for e in allowed if _origin(e) == e.lower()}
        return raw.rstrip("/") in allowed or _origin(raw) in origins

    def _absolute(self, path: str) -> str:
        """``path`` on the public URL (mails carry absolute links)."""
        return self.settings.public_url.rstrip("/") + path

    async def _wants_json(self, request: DialectRequest) -> bool:
        content_type = request.request.headers.get("content-type", "")
        return content_type.startswith("application/json") or await request.flag("json")

    @staticmethod
    def _navigate(url: str, as_json: bool, status: int) -> Response:
        """NextAuth's answer: ``{url}`` for fetch callers, a 302 for form posts."""
        if as_json:
            return json_response({"url": url}, status)
        response = RedirectResponse(url, status_code=302)
        response.headers["cache-control"] = "no-store"
        return response


def _totp_shaped(code: str) -> bool:
    """Six digits (spaces ignored) is an authenticator code; anything else a backup code."""
    compact = code.strip().replace(" ", "")
    return len(compact) == 6 and compact.isdigit()


def _accepts_json(request: Request) -> bool:
    """Whether a GET caller asked for JSON rather than a page (fetch, not a browser)."""
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


DIALECT = AuthCoreDialect
