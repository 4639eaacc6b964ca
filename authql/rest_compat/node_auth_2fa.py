"""node-auth's two-factor routes and challenge shapes: ``/2fa/setup``, ``/2fa/verify-setup``,
``/2fa/verify``, ``/2fa/disable``, the ``mode: '2fa'`` variants of the magic-link and SMS
routes, and the answers every token-issuing route gives while a second factor is pending.

Part of the node-auth dialect (``authql.rest_compat.node_auth``): ``NodeAuthDialect``
inherits these handlers. Upstream: ``src/router/auth.router.ts`` of
github.com/nik2208/awesome-node-auth and DIALECTS.md section 1. Resolvers:
``authql.resolvers.mfa``; the challenge itself comes from ``sessions.start_session``.

Challenge shapes (``/login``, ``/magic-link/verify``, ``/sms/verify``, bearer-mode
``/reset-password``, ``/refresh``, and every other route that issues tokens):
- 2FA on: 200 ``{requiresTwoFactor: true, tempToken, available2faMethods}``; no cookie and
  no token is set or returned, in either mode. ``tempToken`` is authql's challenge token:
  opaque, five minutes, single use, bound to the account and the first factor, dead after
  five wrong codes, and never an access token (``Authorization: Bearer <tempToken>`` is 403
  ``Invalid or expired access token`` on every protected route). Upstream's tempToken is an
  ordinary access JWT that its middleware would accept.
- ``AUTHQL_REQUIRE_TWO_FACTOR`` on and the account has no factor: 403 ``{requires2FASetup:
  true, tempToken, code: '2FA_SETUP_REQUIRED'}``; that tempToken only enrols TOTP
  (``/2fa/setup`` and ``/2fa/verify-setup`` with ``{tempToken}`` instead of a session) and
  then completes like any challenge through ``/2fa/verify``.

Routes:
- POST /2fa/setup (session, or ``{tempToken}`` of a setup challenge) -> 200 ``{secret,
  otpauthUrl, qrCode}``, ``qrCode`` a ``data:image/png;base64,...`` URI (mfa.begin_totp_setup).
- POST /2fa/verify-setup ``{token, secret}`` (session or ``{tempToken}``) -> 200 ``{success:
  true, backupCodes}`` (mfa.confirm_totp_setup); 400 ``{error: 'Invalid TOTP code'}``.
- POST /2fa/verify ``{tempToken, totpCode}`` -> token issue, cookies or the bearer body
  (mfa.verify_two_factor); 400 ``{error: 'tempToken is required', code:
  'TEMP_TOKEN_REQUIRED'}``; 401 ``{error: 'Invalid or expired temp token', code:
  'INVALID_TEMP_TOKEN'}``; 401 ``{error: 'Invalid TOTP code'}``.
- POST /2fa/disable ``{code}`` (or ``totpCode``/``token``; session) -> 200 ``{success:
  true}`` (mfa.disable_two_factor).
- POST /sms/send ``{mode: '2fa', tempToken}`` and /magic-link/send ``{mode: '2fa',
  tempToken}`` -> 200 ``{success: true}`` (mfa.send_two_factor_code, SMS / EMAIL); POST
  /sms/verify ``{mode: '2fa', tempToken, code}`` and /magic-link/verify ``{mode: '2fa',
  tempToken, token}`` -> token issue (mfa.verify_two_factor, SMS / EMAIL). Without
  ``tempToken``: 400 ``{error: 'tempToken is required for 2FA mode', code:
  'TEMP_TOKEN_REQUIRED'}``; a dead one: 401 ``{error: 'Invalid or expired temp token',
  code: 'INVALID_TEMP_TOKEN'}``; a wrong code: the route's own 401 (``Invalid or expired
  SMS code``; ``Invalid magic link token``/``INVALID_MAGIC_LINK``).

Deliberate deviations (security):
- ``/2fa/disable`` needs a current code, TOTP or backup (upstream needs none): 400
  ``{error: 'code is required'}`` without one, 401 ``{error: 'Invalid TOTP code'}`` for a
  wrong one; 400 ``{error: 'Two-factor authentication is not enabled'}`` when it is off.
- ``/2fa/setup`` stores the new secret as pending (upstream persists nothing and trusts the
  ``secret`` the client posts back): ``/2fa/verify-setup`` ignores ``secret`` and confirms
  the pending one, so a secret from an earlier ``/2fa/setup`` call no longer confirms.
  With 2FA already on, ``/2fa/setup`` needs a current code (``code`` or ``totpCode``; with
  2FA off a code is ignored) and then replaces the authenticator once ``/2fa/verify-setup``
  confirms it (mfa.reset_totp; the old one works until then); without one it is 400
  ``{error: 'Two-factor authentication is already enabled: send a current code to replace
  the authenticator'}`` (upstream silently starts over and lets verify-setup swap the
  secret without a code).
- Turning 2FA on ends every other session of the account (upstream keeps them); the
  current one stays signed in. Sessions that never passed the new factor therefore never
  keep working, and their refresh tokens are refused.
- A TOTP code (its 30-second step) is accepted once per account: replays, including the
  code that just confirmed the setup, are 401 ``Invalid TOTP code``. After a setup
  tempToken enrols, ``/2fa/verify`` therefore takes the authenticator's next code or a
  backup code. Wrong codes count toward the account lockout (423 ``ACCOUNT_LOCKED``), and a
  tempToken dies after five of them (401 ``INVALID_TEMP_TOKEN`` afterwards).
- Magic link as second factor: authql mails a six-digit code, not a link.
  ``/magic-link/send {mode: '2fa'}`` mails it to the account's (verified) address and
  ``/magic-link/verify {mode: '2fa', tempToken, token}`` takes that code in ``token``. The
  code is bound to its challenge, so another account's code is the 401
  ``INVALID_MAGIC_LINK`` of a wrong code (upstream: ``TOKEN_MISMATCH``).
- On ``/2fa/verify`` a dead, used or unknown tempToken is 401 ``INVALID_TEMP_TOKEN`` (the
  words of upstream's ``mode: '2fa'`` routes; upstream's ``/2fa/verify`` answers the JWT
  error ``INVALID_ACCESS_TOKEN``), and a missing one is 400 ``TEMP_TOKEN_REQUIRED``.

[inferred] choices:
- ``available2faMethods`` names ``totp`` (TOTP or backup codes), ``sms`` (a verified phone
  number) and ``magic-link`` (a verified address), in that order. Backup codes have no
  name upstream: ``/2fa/verify`` takes one in ``totpCode`` (or ``backupCode``); a
  six-digit value is checked as a TOTP code, anything else as a backup code.
- ``/2fa/verify-setup`` also returns ``backupCodes`` (ten, shown once); it takes the code in
  ``token`` (or ``code``/``totpCode``). ``/2fa/verify`` also takes ``code`` for
  ``totpCode``. A missing code on ``/2fa/verify``, ``/2fa/verify-setup`` and
  ``/magic-link/verify {mode: '2fa'}`` is a wrong code (as upstream); on ``/sms/verify
  {mode: '2fa'}`` it is 400 ``{error: 'code is required'}``, as in login mode.
- ``/sms/send {mode: '2fa'}`` for an account without a verified number is 400 ``{error:
  'User does not have a phone number configured', code: 'PHONE_NOT_SET'}``;
  ``/magic-link/send {mode: '2fa'}`` for an unverified address is 400 ``{error: 'Email
  address is not verified', code: 'EMAIL_NOT_VERIFIED'}``.
- ``/2fa/verify-setup`` before any ``/2fa/setup`` is 400 ``{error: 'No two-factor setup in
  progress'}``. A setup tempToken on ``/2fa/verify`` (or a sign-in tempToken on
  ``/2fa/setup``) is 401 ``INVALID_TEMP_TOKEN``.
- Upstream's 403 ``2FA_REQUIRED`` on ``/2fa/disable`` under a 2FA policy is not reproduced:
  authql's disable does not consult ``AUTHQL_REQUIRE_TWO_FACTOR`` (the next sign-in then
  asks for setup again).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator

from starlette.responses import Response

from authql.errors import ChallengeInvalid, InvalidToken, ValidationFailed
from authql.resolvers import mfa
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.rest_compat._base import DialectRequest, Endpoint, json_response
from authql.rest_compat.node_auth_mail import NodeAuthMailRoutes, Said

#: Routes that take a setup tempToken instead of a session.
SETUP_ROUTES = frozenset({"/2fa/setup", "/2fa/verify-setup"})
#: authql's factor -> node-auth's ``available2faMethods`` name (backup codes go in totpCode).
_METHOD_NAMES = {"TOTP": "totp", "BACKUP_CODE": "totp", "SMS": "sms", "EMAIL": "magic-link"}
#: The message mfa's InvalidToken carries for a dead challenge (vs. a wrong code).

_SUCCESS = {"success": True}
_INVALID_TOTP = (401, "Invalid TOTP code", None)
_ALREADY_ENABLED = (
    "Two-factor authentication is already enabled: send a current code to replace the authenticator"
)
_UNAVAILABLE = {
    "SMS": (400, "User does not have a phone number configured", "PHONE_NOT_SET"),
    "EMAIL": (400, "Email address is not verified", "EMAIL_NOT_VERIFIED"),
}
_WRONG_CODE = {
    "SMS": (401, "Invalid or expired SMS code", None),
    "EMAIL": (401, "Invalid magic link token", "INVALID_MAGIC_LINK"),
}


def available_methods(outcome: AuthOutcome) -> list[str]:
    """The challenge's factors by their node-auth names (``available2faMethods``)."""
    names = [_METHOD_NAMES[m] for m in outcome.two_factor_methods or () if m in _METHOD_NAMES]
    return list(dict.fromkeys(names))


def challenge_response(outcome: AuthOutcome) -> Response | None:
    """node-auth's answer for a pending second factor, or None when ``outcome`` is not one."""
    if outcome.status is AuthStatus.TWO_FACTOR_REQUIRED:
        return json_response(
            {
                "requiresTwoFactor": True,
                "tempToken": outcome.challenge_token,
                "available2faMethods": available_methods(outcome),
            }
        )
    if outcome.status is AuthStatus.TWO_FACTOR_SETUP_REQUIRED:
        body = {
            "requires2FASetup": True,
            "tempToken": outcome.challenge_token,
            "code": "2FA_SETUP_REQUIRED",
        }
        return json_response(body, 403)
    return None


async def temp_token(request: DialectRequest) -> str | None:
    """The body's ``tempToken`` when one is sent (empty counts as none)."""
    return await request.string("tempToken", required=False) or None


@contextlib.contextmanager
def _challenge(wrong_code: tuple[int, str, str | None] | None = None) -> Iterator[None]:
    """A dead challenge is node-auth's INVALID_TEMP_TOKEN; a wrong code is ``wrong_code``."""
    try:
        yield
    except InvalidToken as error:
        if isinstance(error, ChallengeInvalid):
            raise Said(
                401, "Invalid or expired temp token", "INVALID_TEMP_TOKEN", code=error.code
            ) from None
        if wrong_code is None:
            raise
        status, message, node_code = wrong_code
        raise Said(status, message, node_code, code=error.code) from None


@contextlib.contextmanager
def _validation(status: int, message: str, node_code: str | None = None) -> Iterator[None]:
    """The route's one VALIDATION_ERROR, in node-auth's words."""
    try:
        yield
    except ValidationFailed:
        raise Said(status, message, node_code) from None


def _totp_shaped(code: str) -> bool:
    """Six digits (spaces ignored) is an authenticator code; anything else a backup code."""
    compact = code.strip().replace(" ", "")
    return len(compact) == 6 and compact.isdigit()


class NodeAuthTwoFactorRoutes(NodeAuthMailRoutes):
    """The two-factor half of the node-auth dialect (and the ``mode: '2fa'`` variants)."""

    @abc.abstractmethod
    def _issue(self, request: DialectRequest, outcome: AuthOutcome) -> Response:
        """Tokens as cookies or in the body; a pending factor answers its challenge."""

    def two_factor_endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "POST",
                "/2fa/setup",
                self.two_factor_setup,
                "Start TOTP enrolment: secret, authenticator URL and PNG QR data URI (session, or "
                "the tempToken of a setup challenge; with 2FA on, a current code replaces it)",
                authenticated=True,
                body={"tempToken": "string", "code": "string"},
            ),
            Endpoint(
                "POST",
                "/2fa/verify-setup",
                self.two_factor_verify_setup,
                "Confirm the pending TOTP secret with a code: enables 2FA, returns backup codes",
                authenticated=True,
                body={"token": "string", "secret": "string", "tempToken": "string"},
                required=("token",),
            ),
            Endpoint(
                "POST",
                "/2fa/verify",
                self.two_factor_verify,
                "Complete a sign-in challenge with a TOTP or backup code (cookies, or tokens "
                "with X-Auth-Strategy: bearer)",
                body={"tempToken": "string", "totpCode": "string"},
                required=("tempToken", "totpCode"),
            ),
            Endpoint(
                "POST",
                "/2fa/disable",
                self.two_factor_disable,
                "Turn 2FA off (needs a current TOTP or backup code)",
                authenticated=True,
                body={"code": "string"},
                required=("code",),
            ),
        ]

    # --- /2fa routes -----------------------------------------------------------------------

    async def two_factor_setup(self, request: DialectRequest) -> Response:
        context = request.context
        challenge = await temp_token(request)
        code = await request.string("code", required=False, aliases=("totpCode",))
        with _challenge(_INVALID_TOTP):
            try:
                view = await mfa.begin_totp_setup(context, challenge_token=challenge)
            except ValidationFailed:  # 2FA is on already (nothing was written)
                if challenge is not None or not code:
                    raise Said(400, _ALREADY_ENABLED) from None
                view = await mfa.reset_totp(context, code=code)
        return json_response(
            {"secret": view.secret, "otpauthUrl": view.otpauth_url, "qrCode": view.qr_code_png}
        )

    async def two_factor_verify_setup(self, request: DialectRequest) -> Response:
        code = await request.string("token", required=False, aliases=("code", "totpCode"))
        with (
            _challenge((400, "Invalid TOTP code", None)),
            _validation(400, "No two-factor setup in progress"),
        ):
            backup_codes = await mfa.confirm_totp_setup(
                request.context, code=code or "", challenge_token=await temp_token(request)
            )
        return json_response({"success": True, "backupCodes": backup_codes})

    async def two_factor_verify(self, request: DialectRequest) -> Response:
        challenge = await temp_token(request)
        if challenge is None:
            raise Said(400, "tempToken is required", "TEMP_TOKEN_REQUIRED")
        code = await request.string("totpCode", required=False, aliases=("code", "backupCode"))
        code = code or ""
        with _challenge(_INVALID_TOTP):
            outcome = await mfa.verify_two_factor(
                request.context,
                challenge_token=challenge,
                code=code,
                method="TOTP" if _totp_shaped(code) else "BACKUP_CODE",
            )
        return self._issue(request, outcome)

    async def two_factor_disable(self, request: DialectRequest) -> Response:
        code = await request.string("code", required=False, aliases=("totpCode", "token"))
        if not code:
            raise Said(400, "code is required")
        with (
            _challenge(_INVALID_TOTP),
            _validation(400, "Two-factor authentication is not enabled"),
        ):
            await mfa.disable_two_factor(request.context, code=code)
        return json_response(_SUCCESS)

    # --- mode: '2fa' on the magic-link and SMS routes ----------------------------------------

    async def magic_link_send(self, request: DialectRequest) -> Response:
        if await _two_factor_mode(request):
            return await self._send_code(request, "EMAIL")
        return await super().magic_link_send(request)

    async def magic_link_verify(self, request: DialectRequest) -> Response:
        if await _two_factor_mode(request):
            code = await request.string("token", required=False) or ""
            return await self._verify_code(request, "EMAIL", code)
        return await super().magic_link_verify(request)

    async def sms_send(self, request: DialectRequest) -> Response:
        if await _two_factor_mode(request):
            return await self._send_code(request, "SMS")
        return await super().sms_send(request)

    async def sms_verify(self, request: DialectRequest) -> Response:
        if await _two_factor_mode(request):
            challenge = await _mode_temp_token(request)
            code = await request.string("code", required=False)
            if not code:
                raise Said(400, "code is required")
            return await self._verify_code(request, "SMS", code, challenge=challenge)
        return await super().sms_verify(request)

    async def _send_code(self, request: DialectRequest, method: str) -> Response:
        challenge = await _mode_temp_token(request)
        with _challenge(), _validation(*_UNAVAILABLE[method]):
            await mfa.send_two_factor_code(
                request.context, challenge_token=challenge, method=method
            )
        return json_response(_SUCCESS)

    async def _verify_code(
        self, request: DialectRequest, method: str, code: str, *, challenge: str | None = None
    ) -> Response:
        challenge = challenge or await _mode_temp_token(request)
        with _challenge(_WRONG_CODE[method]):
            outcome = await mfa.verify_two_factor(
                request.context, challenge_token=challenge, code=code, method=method
            )
        return self._issue(request, outcome)


async def _two_factor_mode(request: DialectRequest) -> bool:
    return (await request.body()).get("mode") == "2fa"


async def _mode_temp_token(request: DialectRequest) -> str:
    challenge = await temp_token(request)
    if challenge is None:
        raise Said(400, "tempToken is required for 2FA mode", "TEMP_TOKEN_REQUIRED")
    return challenge
