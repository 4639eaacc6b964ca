"""The AuthCore dialect's account lifecycle: ``POST /restore-request`` and ``POST /restore``,
register answering ``USER_SOFT_DELETED`` while a deleted account can be restored, and a
deleted account answering sign-in like an unknown one. Accounts are deleted over GraphQL
(AuthCore has no deletion route)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from authql.models import User
from authql.services.clock import FrozenClock
from authql.services.mail import MailMessage
from tests.rest.test_authcore import PREFIX, SESSION_COOKIE, USER_KEYS, AuthCore, assert_error
from tests.rest.test_authcore import cookie as set_cookie_of
from tests.smtp import extract_link, extract_token
from tests.support import PASSWORD, GraphQLClient
from tests.totp_helpers import STEP, enrol, totp_code

MakeClient = Callable[..., GraphQLClient]

ADA = "ada@example.com"
GHOST = "ghost@example.com"
RETENTION = 30 * 86_400
DELETE_ACCOUNT = "mutation($p: String, $c: String) { deleteAccount(password: $p, code: $c) }"


@pytest.fixture
def make_authcore(make_client: MakeClient) -> Callable[..., AuthCore]:
    def make(**overrides: Any) -> AuthCore:
        return AuthCore(make_client(rest_dialects=(("authcore", PREFIX),), **overrides))

    return make


@pytest.fixture
def authcore(make_authcore: Callable[..., AuthCore]) -> AuthCore:
    return make_authcore()


async def deleted_account(authcore: AuthCore, email: str = ADA) -> str:
    """Register ``email`` on AuthCore, then delete it over GraphQL; its user id."""
    registered = await authcore.register(email)
    assert registered.status_code == 201
    login = await authcore.client.login(email)
    token = login.data["login"]["accessToken"]
    deleted = await authcore.client.gql(DELETE_ACCOUNT, {"p": PASSWORD}, token=token)
    assert deleted.data == {"deleteAccount": True}
    return str(registered.json()["data"]["user"]["id"])


async def restore_mails(authcore: AuthCore, to: str) -> list[MailMessage]:
    sent, _ = await authcore.client.delivered()
    return [mail for mail in sent if mail.to == to and "Restore" in mail.subject]


async def request_restore(authcore: AuthCore, email: str) -> httpx.Response:
    return await authcore.request("POST", "/restore-request", json={"email": email})


async def restore_token(authcore: AuthCore, email: str = ADA) -> str:
    assert (await request_restore(authcore, email)).status_code == 200
    mails = await restore_mails(authcore, email)
    assert mails, f"no restore mail to {email}"
    return extract_token(mails[-1])


# --- restore-request -------------------------------------------------------------------------


async def test_restore_request_always_answers_200(authcore: AuthCore) -> None:
    """Unknown, live and deleted addresses all get 200 {success:true}; only the deleted
    account's owner gets a link, to the app's restore page."""
    await deleted_account(authcore)
    await authcore.register("bob@example.com")
    answers = [await request_restore(authcore, email) for email in (ADA, "bob@example.com", GHOST)]
    for answer in answers:
        assert answer.status_code == 200 and answer.json() == {"success": True}
    sent, _ = await authcore.client.delivered()
    assert [mail.to for mail in sent] == [ADA]
    assert extract_link(sent[0]).startswith("http://127.0.0.1:8000/restore-account?token=")


async def test_restore_request_requires_an_email(authcore: AuthCore) -> None:
    """A body without email is 400 VALIDATION_ERROR naming the field."""
    response = await authcore.request("POST", "/restore-request", json={})
    assert assert_error(response, 400, "VALIDATION_ERROR")["error"]["fields"] == {
        "email": "Required."
    }


# --- restore ---------------------------------------------------------------------------------


async def test_restore_signs_in_with_the_session_cookie(
    authcore: AuthCore, clock: FrozenClock
) -> None:
    """Inside the window, POST /restore {token} answers 200 {success, data:{user}} and sets
    the session cookie; the account signs in again with its password."""
    user_id = await deleted_account(authcore)
    clock.advance(29 * 86_400)
    response = await authcore.request(
        "POST", "/restore", json={"token": await restore_token(authcore)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"success", "data"} and body["success"] is True
    assert set(body["data"]) == {"user"} and set(body["data"]["user"]) == USER_KEYS
    assert body["data"]["user"]["id"] == user_id
    assert body["data"]["user"]["emailVerified"] is True
    assert set_cookie_of(response, SESSION_COOKIE)["value"]
    session = await authcore.session()
    assert session.json()["user"]["email"] == ADA
    assert (await authcore.sign_in()).json()["url"] == "http://127.0.0.1:8000"


async def test_restore_refuses_bad_and_late_tokens(authcore: AuthCore, clock: FrozenClock) -> None:
    """An unknown token, a used one, or one that outlived the restore window is 400
    INVALID_TOKEN, sets no cookie and restores nothing."""
    user_id = await deleted_account(authcore)
    unknown = await authcore.request("POST", "/restore", json={"token": "nope"})
    assert_error(unknown, 400, "INVALID_TOKEN")
    clock.advance(RETENTION - 60)
    token = await restore_token(authcore)
    clock.advance(60)
    late = await authcore.request("POST", "/restore", json={"token": token})
    assert_error(late, 400, "INVALID_TOKEN")
    assert "set-cookie" not in late.headers
    assert await User.filter(id=user_id, deleted_at__isnull=False).exists()
    missing = await authcore.request("POST", "/restore", json={})
    assert_error(missing, 400, "VALIDATION_ERROR")


async def test_restore_with_two_factor_restores_without_signing_in(
    authcore: AuthCore, clock: FrozenClock
) -> None:
    """With 2FA on, the account comes back but the answer is 403 TWO_FACTOR_REQUIRED and no
    cookie; the password and the next code then sign in."""
    await authcore.register()
    token = (await authcore.client.login(ADA)).data["login"]["accessToken"]
    enrolment = await enrol(authcore.client, clock, access_token=token)
    clock.advance(STEP)
    code = totp_code(enrolment.secret, clock)
    deleted = await authcore.client.gql(DELETE_ACCOUNT, {"p": PASSWORD, "c": code}, token=token)
    assert deleted.data == {"deleteAccount": True}
    response = await authcore.request(
        "POST", "/restore", json={"token": await restore_token(authcore)}
    )
    assert_error(response, 403, "TWO_FACTOR_REQUIRED")
    assert "set-cookie" not in response.headers
    assert await User.filter(email=ADA, deleted_at=None).exists()
    clock.advance(STEP)
    signed_in = await authcore.sign_in(totpCode=totp_code(enrolment.secret, clock))
    assert signed_in.status_code == 200, signed_in.text


# --- register and sign-in of a deleted account -----------------------------------------------


async def test_register_with_a_restorable_email_is_user_soft_deleted(
    authcore: AuthCore, clock: FrozenClock
) -> None:
    """A deleted account's email answers 409 USER_SOFT_DELETED (a live one 409 CONFLICT)
    until the window ends; then the address registers again."""
    await deleted_account(authcore)
    await authcore.register("bob@example.com")
    reserved = await authcore.register(ADA)
    assert_error(reserved, 409, "USER_SOFT_DELETED")
    assert_error(await authcore.register("bob@example.com"), 409, "CONFLICT")
    clock.advance(RETENTION)
    assert (await authcore.register(ADA)).status_code == 201


async def test_deleted_account_signs_in_like_an_unknown_one(authcore: AuthCore) -> None:
    """Credentials sign-in, check-2fa and forgot-password answer a deleted account's email
    exactly as an unknown one's."""
    await deleted_account(authcore)
    deleted = await authcore.sign_in(ADA)
    unknown = await authcore.sign_in(GHOST)
    assert deleted.status_code == unknown.status_code == 401
    assert deleted.json() == unknown.json()
    for path in ("/check-2fa", "/forgot-password"):
        first = await authcore.request("POST", path, json={"email": ADA, "password": PASSWORD})
        second = await authcore.request("POST", path, json={"email": GHOST, "password": PASSWORD})
        assert (first.status_code, first.json()) == (second.status_code, second.json())
    sent, _ = await authcore.client.delivered()
    assert sent == []
