"""AuthCore's account-restore routes: ``POST /restore-request`` and ``POST /restore``.

Part of the AuthCore dialect (``authql.rest_compat.authcore``): ``AuthCoreDialect``
inherits these handlers, and its error table renders ``AccountSoftDeleted`` (register with
the email of a deleted account that can still be restored) as 409 ``USER_SOFT_DELETED``.
Upstream (DIALECTS.md section 3) exports ``softDeleteUser`` and ``restoreUser`` and
documents that the restore request respects the retention window and never reveals a
deletion; the shapes are [inferred]. Resolvers: ``authql.resolvers.lifecycle``
(request_account_restore, restore_account).

Routes:
- POST /restore-request ``{email}`` (spends ``authcore_auth``, like forgot-password) ->
  200 ``{success:true}`` always: the same body, status and timing for unknown, live and
  deleted addresses. If the address belongs to an account deleted inside the retention
  window (AUTHQL_DELETED_RETENTION_DAYS), a single-use link goes to it:
  ``<public URL>/restore-account?token=`` [inferred], the app's page, which POSTs the token
  to ``/restore``; it lives an hour at most, never past the end of the window.
- POST /restore ``{token}`` (spends ``authcore_auth``) -> the account is restored and
  signed in as ``GET /verify`` signs in JSON callers: 200 ``{success:true, data:{user}}``
  with the ``authcore.session-token`` cookie. The address counts as verified (the link was
  read in its mailbox). An unknown, used or expired token, or one for an account past its
  window, is 400 ``INVALID_TOKEN`` and restores nothing.

[inferred] choices:
- With 2FA on, the account is restored but nobody is signed in (AuthCore's flow has no
  route that takes a code after a link): 403 ``TWO_FACTOR_REQUIRED``; the user signs in with
  the password and a code. When the policy requires 2FA and the account has none, the
  answer is sign-in's ``TwoFactorSetupRequired`` (403 ``{url}``) with the setup cookie.
- ``password`` is not asked for (DIALECTS.md wonders about ``{token, password?}``): the
  emailed link is the proof, as for a password reset.
"""

from __future__ import annotations

import abc

from starlette.responses import Response

from authql.errors import EmailNotVerified, TwoFactorRequired
from authql.resolvers import lifecycle
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.rest_compat._base import Dialect, DialectRequest, Endpoint, json_response

#: The app page (under the public URL) that restore mails open [inferred].
RESTORE_PAGE = "/restore-account"


class AuthCoreLifecycleRoutes(Dialect):
    """The account-restore part of the AuthCore dialect."""

    @abc.abstractmethod
    def _absolute(self, path: str) -> str:
        """``path`` on the public URL (mails carry absolute links)."""

    @abc.abstractmethod
    def _setup_required(self, outcome: AuthOutcome, as_json: bool) -> Response:
        """The ``TwoFactorSetupRequired`` answer with the setup cookie."""

    @abc.abstractmethod
    def _set_session_cookie(self, response: Response, session_token: str) -> None:
        """The ``authcore.session-token`` cookie of a new session."""

    def lifecycle_endpoints(self) -> list[Endpoint]:
        auth = "authcore_auth"
        return [
            Endpoint(
                "POST",
                "/restore-request",
                self.restore_request,
                "Mail a restore link for a deleted account (always 200)",
                body={"email": "string"},
                required=("email",),
                rate_limit=auth,
            ),
            Endpoint(
                "POST",
                "/restore",
                self.restore,
                "Restore a deleted account from an emailed token and sign in",
                body={"token": "string"},
                required=("token",),
                rate_limit=auth,
            ),
        ]

    async def restore_request(self, request: DialectRequest) -> Response:
        await lifecycle.request_account_restore(
            request.context,
            email=await request.require("email"),
            link_base=self._absolute(RESTORE_PAGE),
        )
        return json_response({"success": True})

    async def restore(self, request: DialectRequest) -> Response:
        outcome = await lifecycle.restore_account(
            request.context, token=await request.require("token")
        )
        if outcome.status is AuthStatus.TWO_FACTOR_SETUP_REQUIRED:
            return self._setup_required(outcome, True)
        if outcome.status is AuthStatus.TWO_FACTOR_REQUIRED:
            raise TwoFactorRequired()
        if outcome.status is AuthStatus.EMAIL_NOT_VERIFIED:
            raise EmailNotVerified()
        from authql.rest_compat.authcore import user_json  # the dialect imports this module

        assert outcome.user is not None and outcome.session_token is not None
        response = json_response({"success": True, "data": {"user": user_json(outcome.user)}})
        self._set_session_cookie(response, outcome.session_token)
        return response
