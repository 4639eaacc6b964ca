"""node-auth's mail and SMS routes: password reset, email verification and change, magic
links, SMS codes and ``/add-phone``.

Part of the node-auth dialect (``authql.rest_compat.node_auth``, whose docstring lists these
routes' deviations and [inferred] choices): ``NodeAuthDialect`` inherits the handlers below.
Each one parses node-auth's body, calls one resolver and answers ``{success: true}`` or
issues tokens through the dialect's ``_issue`` (cookies, or the body with
``X-Auth-Strategy: bearer``). Errors whose words upstream fixes per route (``Invalid reset
token``, ``INVALID_MAGIC_LINK``, ...) are raised as ``Said``, already in node-auth's shape.
The ``mode: '2fa'`` variants of the magic-link and SMS routes are handled in
``node_auth_2fa``, which overrides these handlers and falls back to them otherwise.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from authql.errors import AuthError, ErrorCode, InvalidToken
from authql.resolvers import email_change, passwordless, recovery, verification
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.rest_compat._base import Dialect, DialectRequest, Endpoint, json_response
from authql.settings import Settings

# --- shared by every part of the node-auth dialect ---------------------------------------------

NO_ACCESS_TOKEN = "No access token provided"
BAD_ACCESS_TOKEN = "Invalid or expired access token"


def bearer_strategy(request: DialectRequest) -> bool:
    """The client asked for tokens in the body (``X-Auth-Strategy: bearer``)."""
    return request.request.headers.get("x-auth-strategy", "").strip().lower() == "bearer"


def cookie_name(settings: Settings, base: str, *, root: bool = True) -> str:
    """Upstream's names: bare over http; ``__Host-`` (path ``/``) or ``__Secure-`` over https."""
    if not settings.secure_cookies:
        return base
    return f"__Host-{base}" if root else f"__Secure-{base}"


def read_cookie(request: Request, settings: Settings, base: str) -> str | None:
    names = (f"__Host-{base}", f"__Secure-{base}") if settings.secure_cookies else (base,)
    for name in names:
        if value := request.cookies.get(name):
            return value
    return None


def iso(moment: dt.datetime) -> str:
    """JavaScript's ``Date.prototype.toJSON()``: UTC, milliseconds, ``Z``."""
    utc = moment.astimezone(dt.UTC) if moment.tzinfo else moment
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class Said(AuthError):
    """An error in the exact words node-auth uses on one route: rendered as is."""

    def __init__(
        self,
        status: int,
        error: str,
        node_code: str | None = None,
        *,
        code: ErrorCode = ErrorCode.VALIDATION_ERROR,
    ) -> None:
        super().__init__(error)
        self.code = code
        self.status = status
        self.body: dict[str, Any] = {"error": error}
        if node_code is not None:
            self.body["code"] = node_code


#: route -> which resolver error upstream words how there: (status, error, code or None).
_ROUTE_ERRORS: dict[str, dict[str, tuple[int, str, str | None]]] = {
    "/reset-password": {
        "invalid": (400, "Invalid reset token", None),
        "expired": (400, "Reset token has expired", None),
    },
    "/send-verification-email": {"validation": (400, "Email is already verified", None)},
    "/verify-email": {
        "invalid": (400, "Invalid verification token", None),
        "expired": (400, "Verification token has expired", None),
    },
    "/change-email/request": {
        "conflict": (409, "Email address is already in use", None),
        "credentials": (401, "Password is incorrect", "INVALID_CREDENTIALS"),
    },
    "/change-email/confirm": {
        "invalid": (400, "Invalid email-change token", None),
        "expired": (400, "Email-change token has expired", None),
        "conflict": (409, "Email address is already in use", None),
    },
    "/magic-link/verify": {
        "invalid": (401, "Invalid magic link token", "INVALID_MAGIC_LINK"),
        "expired": (401, "Magic link token has expired", "MAGIC_LINK_EXPIRED"),
    },
    # Only on the userId path, where the one validation failure is a missing number.
    "/sms/send": {
        "validation": (400, "User does not have a phone number configured", "PHONE_NOT_SET")
    },
    "/sms/verify": {
        "invalid": (401, "Invalid or expired SMS code", None),
        "expired": (401, "Invalid or expired SMS code", None),
    },
}

_KINDS = {
    ErrorCode.CONFLICT: "conflict",
    ErrorCode.INVALID_CREDENTIALS: "credentials",
    ErrorCode.VALIDATION_ERROR: "validation",
}


@contextlib.contextmanager
def _worded(route: str) -> Iterator[None]:
    """Re-raise the resolver errors ``route`` words its own way as ``Said``."""
    try:
        yield
    except AuthError as error:
        if isinstance(error, InvalidToken):
            kind = "expired" if error.expired else "invalid"
        else:
            kind = _KINDS.get(error.code, "")
        worded = _ROUTE_ERRORS[route].get(kind)
        if worded is None:
            raise
        status, message, node_code = worded
        raise Said(status, message, node_code, code=error.code) from None


_SUCCESS = {"success": True}


class NodeAuthMailRoutes(Dialect):
    """The mail and SMS half of the node-auth dialect."""

    @abc.abstractmethod
    def _issue(self, request: DialectRequest, outcome: AuthOutcome) -> Response:
        """Tokens as cookies or in the body; a pending factor answers its challenge."""

    def _link(self, path: str) -> str:
        """``<public url><prefix><path>``: where upstream's ``buildUiLink`` points mails."""
        return f"{self.settings.public_url.rstrip('/')}{self.url(path)}"

    def mail_endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "POST",
                "/forgot-password",
                self.forgot_password,
                "Mail a password reset link (always success, whether or not the account exists)",
                body={"email": "string", "emailLang": "string"},
                required=("email",),
            ),
            Endpoint(
                "POST",
                "/reset-password",
                self.reset_password,
                "Set a new password from a reset link (every session ends; with "
                "X-Auth-Strategy: bearer also signs in)",
                body={"token": "string", "password": "string", "newPassword": "string"},
                required=("token",),
            ),
            Endpoint(
                "POST",
                "/send-verification-email",
                self.send_verification_email,
                "Mail the signed-in user a link that verifies their address",
                authenticated=True,
                body={"emailLang": "string"},
            ),
            Endpoint(
                "GET",
                "/verify-email",
                self.verify_email,
                "Verify the address from the mailed link",
                query={"token": "string"},
            ),
            Endpoint(
                "POST",
                "/change-email/request",
                self.change_email_request,
                "Mail a confirmation link to a new address (password accounts re-enter it)",
                authenticated=True,
                body={"newEmail": "string", "password": "string", "emailLang": "string"},
                required=("newEmail",),
            ),
            Endpoint(
                "POST",
                "/change-email/confirm",
                self.change_email_confirm,
                "Move the account to the confirmed address",
                body={"token": "string"},
                required=("token",),
            ),
            Endpoint(
                "POST",
                "/magic-link/send",
                self.magic_link_send,
                "Mail a sign-in link (always success, whether or not the account exists); "
                "mode '2fa' with a tempToken mails a second-factor code",
                body={
                    "email": "string",
                    "emailLang": "string",
                    "mode": "string",
                    "tempToken": "string",
                },
            ),
            Endpoint(
                "POST",
                "/magic-link/verify",
                self.magic_link_verify,
                "Sign in with a magic link (cookies, or tokens with X-Auth-Strategy: bearer); "
                "mode '2fa' completes a challenge with the mailed code in token",
                body={"token": "string", "mode": "string", "tempToken": "string"},
                required=("token",),
            ),
            Endpoint(
                "POST",
                "/sms/send",
                self.sms_send,
                "Text a sign-in code to the account's phone (by userId, email or phone); "
                "mode '2fa' with a tempToken texts a second-factor code",
                body={
                    "userId": "string",
                    "email": "string",
                    "phone": "string",
                    "mode": "string",
                    "tempToken": "string",
                },
            ),
            Endpoint(
                "POST",
                "/sms/verify",
                self.sms_verify,
                "Sign in with a texted code, or verify a number added while signed in; "
                "mode '2fa' completes a challenge",
                body={
                    "userId": "string",
                    "phone": "string",
                    "code": "string",
                    "mode": "string",
                    "tempToken": "string",
                },
                required=("code",),
            ),
            Endpoint(
                "POST",
                "/add-phone",
                self.add_phone,
                "Text a code that sets and verifies a new number (confirm with /sms/verify)",
                authenticated=True,
                body={"phoneNumber": "string"},
                required=("phoneNumber",),
            ),
        ]

    # --- password reset ----------------------------------------------------------------------

    async def forgot_password(self, request: DialectRequest) -> Response:
        await recovery.request_password_reset(
            request.context,
            identifier=await request.string("email", required=False) or "",
            link_base=self._link("/reset-password"),
        )
        return json_response(_SUCCESS)

    async def reset_password(self, request: DialectRequest) -> Response:
        token = await request.string("token", required=False) or ""
        password = await request.string("password", required=False, aliases=("newPassword",))
        bearer = bearer_strategy(request)
        with _worded("/reset-password"):
            outcome = await recovery.reset_password(
                request.context, token=token, password=password or "", sign_in=bearer
            )
        return self._issue(request, outcome) if bearer else json_response(_SUCCESS)

    # --- email verification and change ------------------------------------------------------

    async def send_verification_email(self, request: DialectRequest) -> Response:
        with _worded("/send-verification-email"):
            await verification.send_verification_email(
                request.context, link_base=self._link("/verify-email")
            )
        return json_response(_SUCCESS)

    async def verify_email(self, request: DialectRequest) -> Response:
        token = request.query("token")
        if not token:
            raise Said(400, "Token is required")
        with _worded("/verify-email"):
            await verification.verify_email(request.context, token=token)
        return json_response(_SUCCESS)

    async def change_email_request(self, request: DialectRequest) -> Response:
        with _worded("/change-email/request"):
            await email_change.request_email_change(
                request.context,
                new_email=await request.string("newEmail", required=False) or "",
                password=await request.string(
                    "password", required=False, aliases=("currentPassword",)
                ),
                link_base=self._link("/change-email/confirm"),
            )
        return json_response(_SUCCESS)

    async def change_email_confirm(self, request: DialectRequest) -> Response:
        token = await request.string("token", required=False) or ""
        with _worded("/change-email/confirm"):
            await email_change.confirm_email_change(request.context, token=token)
        return json_response(_SUCCESS)

    # --- magic links -------------------------------------------------------------------------

    async def magic_link_send(self, request: DialectRequest) -> Response:
        email = await request.string("email", required=False)
        if not email:
            raise Said(400, "email is required")
        await passwordless.send_magic_link(
            request.context, email=email, link_base=self._link("/magic-link/verify")
        )
        return json_response(_SUCCESS)

    async def magic_link_verify(self, request: DialectRequest) -> Response:
        token = await request.string("token", required=False) or ""
        with _worded("/magic-link/verify"):
            outcome = await passwordless.verify_magic_link(request.context, token=token)
        return self._issue(request, outcome)

    # --- SMS ---------------------------------------------------------------------------------

    async def sms_send(self, request: DialectRequest) -> Response:
        context = request.context
        email = await request.string("email", required=False)
        user_id = await request.string("userId", required=False)
        phone = await request.string("phone", required=False, aliases=("phoneNumber",))
        if email:
            await passwordless.send_sms_code(context, email=email)
        elif user_id:
            with _worded("/sms/send"):
                await passwordless.send_sms_code(context, user_id=user_id)
        elif phone:
            await passwordless.send_sms_code(context, phone=phone)
        else:
            raise Said(400, "userId or email is required")
        return json_response(_SUCCESS)

    async def sms_verify(self, request: DialectRequest) -> Response:
        user_id = await request.string("userId", required=False)
        phone = await request.string("phone", required=False, aliases=("phoneNumber",))
        code = await request.string("code", required=False)
        if not user_id and not phone:
            raise Said(400, "userId is required")
        if not code:
            raise Said(400, "code is required")
        with _worded("/sms/verify"):
            outcome = await passwordless.verify_sms_code(
                request.context, code=code, phone=phone or None, user_id=user_id or None
            )
        if outcome.status is AuthStatus.OK and outcome.session is None:
            return json_response(_SUCCESS)  # a number added while signed in is now verified
        return self._issue(request, outcome)

    async def add_phone(self, request: DialectRequest) -> Response:
        phone = await request.require("phoneNumber", aliases=("phone",))
        await passwordless.send_sms_code(request.context, phone=phone)
        return json_response(_SUCCESS)
