"""Mutation fields: each parses its arguments, calls one resolver, returns its outcome."""

from __future__ import annotations

import strawberry

from authql.resolvers import (
    accounts,
    email_change,
    mfa,
    oauth,
    passwordless,
    passwords,
    recovery,
    sessions,
    verification,
)
from authql.schema.types import (
    AuthPayload,
    RegisterInput,
    TotpSetup,
    TwoFactorMethod,
    TwoFactorPreflight,
    UpdateProfileInput,
    User,
)

#: The cookie binding an OAuth flow to the browser that started it (HttpOnly, 10 min).
OAUTH_BINDING_COOKIE = "authql_oauth"
#: Where the provider sends SPA flows that named no redirect URI.
OAUTH_CALLBACK_PAGE = "/oauth/callback"


@strawberry.type
class AccountMutation:
    """Sign-in flows and the caller's own account."""

    @strawberry.mutation(description="Create a password account and sign it in.")
    async def register(self, info: strawberry.Info, input: RegisterInput) -> AuthPayload:
        return await accounts.register(  # type: ignore[return-value]
            info.context,
            email=input.email,
            password=input.password,
            username=input.username,
            name=input.name,
            first_name=input.first_name,
            last_name=input.last_name,
            phone=input.phone,
            tenant=input.tenant,
        )

    @strawberry.mutation(description="Sign in with an email or username and a password.")
    async def login(
        self, info: strawberry.Info, identifier: str, password: str, remember: bool | None = False
    ) -> AuthPayload:
        return await sessions.login(  # type: ignore[return-value]
            info.context, identifier=identifier, password=password, remember=bool(remember)
        )

    @strawberry.mutation(description="Rotate a refresh token; the old one stops working.")
    async def refresh(self, info: strawberry.Info, refresh_token: str) -> AuthPayload:
        return await sessions.refresh(info.context, refresh_token=refresh_token)  # type: ignore[return-value]

    @strawberry.mutation(description="End the current session.")
    async def logout(self, info: strawberry.Info) -> bool:
        return await sessions.logout(info.context)

    @strawberry.mutation(description="End every session of the caller; returns how many.")
    async def logout_all(self, info: strawberry.Info) -> int:
        return await sessions.logout_all(info.context)

    @strawberry.mutation(description="End one of the caller's sessions.")
    async def revoke_session(self, info: strawberry.Info, id: strawberry.ID) -> bool:
        return await sessions.revoke_session(info.context, session_id=str(id))

    @strawberry.mutation(description="Change profile fields; omitted fields stay as they are.")
    async def update_profile(self, info: strawberry.Info, input: UpdateProfileInput) -> User:
        changes = {
            name: value
            for name in ("username", "name", "first_name", "last_name", "phone")
            if (value := getattr(input, name)) is not strawberry.UNSET
        }
        return await accounts.update_profile(info.context, **changes)  # type: ignore[return-value]

    @strawberry.mutation(description="Change the password; every other session is revoked.")
    async def change_password(
        self, info: strawberry.Info, current_password: str, new_password: str
    ) -> bool:
        return await passwords.change_password(
            info.context, current_password=current_password, new_password=new_password
        )

    @strawberry.mutation(description="Whether signing in as this identifier needs a 2nd factor.")
    async def check_two_factor(self, info: strawberry.Info, identifier: str) -> TwoFactorPreflight:
        view = await mfa.check_two_factor(info.context, identifier=identifier)
        return TwoFactorPreflight(
            requires_two_factor=view.requires_two_factor,
            methods=[TwoFactorMethod(method) for method in view.methods],
        )

    @strawberry.mutation(description="Mail a reset link if the account exists. Always true.")
    async def request_password_reset(
        self, info: strawberry.Info, email: str, return_url: str | None = None
    ) -> bool:
        return await recovery.request_password_reset(
            info.context, identifier=email, return_url=return_url
        )

    @strawberry.mutation(description="Set a new password from a reset link; signs in.")
    async def reset_password(self, info: strawberry.Info, token: str, password: str) -> AuthPayload:
        return await recovery.reset_password(  # type: ignore[return-value]
            info.context, token=token, password=password, sign_in=True
        )

    @strawberry.mutation(description="Mail the signed-in user a verification link.")
    async def send_verification_email(
        self, info: strawberry.Info, return_url: str | None = None
    ) -> bool:
        return await verification.send_verification_email(info.context, return_url=return_url)

    @strawberry.mutation(description="Verify the address from an emailed link; signs in.")
    async def verify_email(self, info: strawberry.Info, token: str) -> AuthPayload:
        return await verification.verify_email(  # type: ignore[return-value]
            info.context, token=token, sign_in=True
        )

    @strawberry.mutation(description="Mail a confirmation link to a new address.")
    async def request_email_change(
        self, info: strawberry.Info, new_email: str, password: str | None = None
    ) -> bool:
        return await email_change.request_email_change(
            info.context, new_email=new_email, password=password
        )

    @strawberry.mutation(description="Move the account to the confirmed new address.")
    async def confirm_email_change(self, info: strawberry.Info, token: str) -> User:
        return await email_change.confirm_email_change(info.context, token=token)  # type: ignore[return-value]

    @strawberry.mutation(description="Mail a sign-in link if the account exists. Always true.")
    async def send_magic_link(
        self, info: strawberry.Info, email: str, return_url: str | None = None
    ) -> bool:
        return await passwordless.send_magic_link(info.context, email=email, return_url=return_url)

    @strawberry.mutation(description="Sign in from a magic link.")
    async def verify_magic_link(self, info: strawberry.Info, token: str) -> AuthPayload:
        return await passwordless.verify_magic_link(info.context, token=token)  # type: ignore[return-value]

    @strawberry.mutation(
        description="Text a code: a sign-in code, or (signed in, new number) a verification code."
    )
    async def send_sms_code(self, info: strawberry.Info, phone: str) -> bool:
        return await passwordless.send_sms_code(info.context, phone=phone)

    @strawberry.mutation(description="Sign in with a texted code, or verify a new number.")
    async def verify_sms_code(self, info: strawberry.Info, phone: str, code: str) -> AuthPayload:
        return await passwordless.verify_sms_code(info.context, phone=phone, code=code)  # type: ignore[return-value]

    @strawberry.mutation(description="A new authenticator secret and QR code (confirm next).")
    async def begin_totp_setup(
        self, info: strawberry.Info, challenge_token: str | None = None
    ) -> TotpSetup:
        return await mfa.begin_totp_setup(  # type: ignore[return-value]
            info.context, challenge_token=challenge_token
        )

    @strawberry.mutation(description="Turn TOTP on with a code; returns backup codes once.")
    async def confirm_totp_setup(
        self, info: strawberry.Info, code: str, challenge_token: str | None = None
    ) -> list[str]:
        return await mfa.confirm_totp_setup(
            info.context, code=code, challenge_token=challenge_token
        )

    @strawberry.mutation(description="Complete a pending sign-in with a second factor.")
    async def verify_two_factor(
        self,
        info: strawberry.Info,
        challenge_token: str,
        code: str,
        method: TwoFactorMethod | None = TwoFactorMethod.TOTP,
    ) -> AuthPayload:
        chosen = (method or TwoFactorMethod.TOTP).value
        return await mfa.verify_two_factor(  # type: ignore[return-value]
            info.context, challenge_token=challenge_token, code=code, method=chosen
        )

    @strawberry.mutation(description="Text or mail a code for a pending challenge.")
    async def send_two_factor_code(
        self, info: strawberry.Info, challenge_token: str, method: TwoFactorMethod
    ) -> bool:
        return await mfa.send_two_factor_code(
            info.context, challenge_token=challenge_token, method=method.value
        )

    @strawberry.mutation(description="Turn 2FA off; needs a current code.")
    async def disable_two_factor(self, info: strawberry.Info, code: str) -> bool:
        return await mfa.disable_two_factor(info.context, code=code)

    @strawberry.mutation(description="New backup codes (the old ones die); needs a current code.")
    async def regenerate_backup_codes(self, info: strawberry.Info, code: str) -> list[str]:
        return await mfa.regenerate_backup_codes(info.context, code=code)

    @strawberry.mutation(description="Rotate the authenticator secret; confirm it again.")
    async def reset_totp(self, info: strawberry.Info, code: str) -> TotpSetup:
        return await mfa.reset_totp(info.context, code=code)  # type: ignore[return-value]

    @strawberry.mutation(
        description="Start an external sign-in; returns the URL to send the browser to."
    )
    async def start_o_auth(
        self,
        info: strawberry.Info,
        provider: str,
        redirect_uri: str | None = None,
        link: bool | None = False,
    ) -> str:
        context = info.context
        settings = context.services.settings
        started = await oauth.start_oauth(
            context,
            provider=provider,
            redirect_uri=redirect_uri or f"{settings.public_url}{OAUTH_CALLBACK_PAGE}",
            link=bool(link),
            trusted_redirect=redirect_uri is None,
        )
        context.response.set_cookie(
            OAUTH_BINDING_COOKIE,
            started.binding,
            max_age=oauth.STATE_TTL,
            httponly=True,
            samesite="lax",
            secure=settings.secure_cookies,
        )
        return started.authorization_url

    @strawberry.mutation(description="Finish an external sign-in from the provider's callback.")
    async def finish_o_auth(
        self, info: strawberry.Info, provider: str, code: str, state: str
    ) -> AuthPayload:
        context = info.context
        finished = await oauth.finish_oauth(
            context,
            provider=provider,
            code=code,
            state=state,
            binding=context.request.cookies.get(OAUTH_BINDING_COOKIE),
        )
        return finished.outcome  # type: ignore[return-value]

    @strawberry.mutation(description="Remove a linked external account.")
    async def unlink_account(self, info: strawberry.Info, provider: str, account_id: str) -> bool:
        return await oauth.unlink_account(info.context, provider=provider, account_id=account_id)
