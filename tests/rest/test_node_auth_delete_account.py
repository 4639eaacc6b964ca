"""node-auth's ``DELETE /auth/account``: a hard delete after re-checking the owner, that
clears the cookies, frees the email and leaves no personal data; and a (soft-)deleted
account answering node-auth's sign-in routes exactly as an unknown one."""

from __future__ import annotations

from collections.abc import Callable

from authql.models import AuthEventRecord, Session, User
from authql.services.clock import FrozenClock
from tests.rest.test_node_auth import (
    BAD_TOKEN,
    BEARER,
    CSRF_INVALID,
    EMAIL,
    NO_TOKEN,
    NodeAuth,
    auth,
    node_auth,
)
from tests.support import PASSWORD, GraphQLClient, set_cookies
from tests.totp_helpers import STEP, enrol, totp_code

MakeClient = Callable[..., GraphQLClient]

GHOST = "ghost@example.com"
INVALID_TOTP = {"error": "Invalid TOTP code"}


async def signed_up(api: NodeAuth, email: str = EMAIL) -> tuple[str, dict[str, str]]:
    """Register ``email`` and log in in bearer mode: (user id, tokens)."""
    registered = await api.register(email)
    assert registered.status_code == 201, registered.text
    return registered.json()["userId"], await api.tokens(email)


async def test_delete_account_purges_and_frees_the_email(make_client: MakeClient) -> None:
    """DELETE /account with the password answers {success:true}, clears both cookies, kills
    the token at once, removes the account and its sessions, keeps only the user id in the
    audit log, and the email registers again."""
    api = node_auth(make_client)
    user_id, tokens = await signed_up(api)
    response = await api.call(
        "DELETE", "/account", json={"password": PASSWORD}, headers=auth(tokens["accessToken"])
    )
    assert response.status_code == 200 and response.json() == {"success": True}
    cleared = set_cookies(response)
    assert cleared["accessToken"]["max-age"] == "0"
    assert cleared["refreshToken"]["max-age"] == "0"
    assert cleared["refreshToken"]["path"] == "/auth/refresh"
    me = await api.get("/me", headers=auth(tokens["accessToken"]))
    assert me.status_code == 403 and me.json() == BAD_TOKEN
    assert not await User.filter(id=user_id).exists()
    assert not await Session.filter(user_id=user_id).exists()
    audit = await AuthEventRecord.filter(user_id=user_id)
    assert {event.type for event in audit} >= {"REGISTERED", "LOGIN_SUCCEEDED", "ACCOUNT_DELETED"}
    assert all(event.ip_address is None and event.user_agent is None for event in audit)
    (deleted,) = [event for event in audit if event.type == "ACCOUNT_DELETED"]
    assert deleted.detail == {"mode": "hard", "actor": user_id}
    refresh = await api.post("/refresh", json={"refreshToken": tokens["refreshToken"]})
    assert refresh.status_code == 401
    assert (await api.register()).status_code == 201


async def test_delete_account_with_the_cookie_session(make_client: MakeClient) -> None:
    """A cookie-mode client deletes with its access cookie; with CSRF on it must echo the
    csrf-token cookie, else 403 CSRF_INVALID and nothing is deleted."""
    api = node_auth(make_client, node_auth_csrf=True)
    user_id, _ = await signed_up(api)
    login = await api.login()
    assert login.status_code == 200
    forged = await api.call("DELETE", "/account", json={"password": PASSWORD})
    assert forged.status_code == 403 and forged.json() == CSRF_INVALID
    assert await User.filter(id=user_id).exists()
    csrf = api.http.cookies["csrf-token"]
    response = await api.call(
        "DELETE", "/account", json={"password": PASSWORD}, headers={"x-csrf-token": csrf}
    )
    assert response.status_code == 200 and response.json() == {"success": True}
    assert not await User.filter(id=user_id).exists()
    assert "accessToken" not in api.http.cookies


async def test_delete_account_rechecks_the_owner(make_client: MakeClient) -> None:
    """Without a token: 403; without or with a wrong password: 401 in upstream's words and
    nothing is deleted; wrong passwords count toward the lockout (then 423)."""
    api = node_auth(make_client, lockout_threshold=2)
    user_id, tokens = await signed_up(api)
    anonymous = await api.call("DELETE", "/account", json={"password": PASSWORD})
    assert anonymous.status_code == 403 and anonymous.json() == NO_TOKEN
    bearer = auth(tokens["accessToken"])
    missing = await api.call("DELETE", "/account", headers=bearer)
    assert missing.status_code == 401 and missing.json() == {"error": "Password is required"}
    for _ in range(2):
        wrong = await api.call("DELETE", "/account", json={"password": "nope"}, headers=bearer)
        assert wrong.status_code == 401 and wrong.json() == {"error": "Password is incorrect"}
    locked = await api.call("DELETE", "/account", json={"password": PASSWORD}, headers=bearer)
    assert locked.status_code == 423 and locked.headers["retry-after"]
    assert await User.filter(id=user_id).exists()


async def test_delete_account_with_two_factor_needs_a_code(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """With 2FA on, a missing or wrong totpCode is 401 Invalid TOTP code; the password and
    the current code delete the account."""
    api = node_auth(make_client)
    user_id, tokens = await signed_up(api)
    enrolment = await enrol(api.client, clock, access_token=tokens["accessToken"])
    clock.advance(STEP)
    bearer = auth(tokens["accessToken"])
    for extra in ({}, {"totpCode": "000000"}):
        refused = await api.call(
            "DELETE", "/account", json={"password": PASSWORD, **extra}, headers=bearer
        )
        assert refused.status_code == 401 and refused.json() == INVALID_TOTP
    body = {"password": PASSWORD, "totpCode": totp_code(enrolment.secret, clock)}
    response = await api.call("DELETE", "/account", json=body, headers=bearer)
    assert response.status_code == 200 and response.json() == {"success": True}
    assert not await User.filter(id=user_id).exists()


async def test_deleted_account_answers_like_an_unknown_one(make_client: MakeClient) -> None:
    """After a (soft) deletion over GraphQL, node-auth's login and forgot-password answer
    the account's email exactly as an unknown one, in both token modes."""
    api = node_auth(make_client)
    _, tokens = await signed_up(api)
    deleted = await api.client.gql(
        "mutation($p: String) { deleteAccount(password: $p) }",
        {"p": PASSWORD},
        token=tokens["accessToken"],
    )
    assert deleted.data == {"deleteAccount": True}
    for headers in ({}, BEARER):
        known = await api.post(
            "/login", json={"email": EMAIL, "password": PASSWORD}, headers=headers
        )
        ghost = await api.post(
            "/login", json={"email": GHOST, "password": PASSWORD}, headers=headers
        )
        assert known.status_code == ghost.status_code == 401
        assert known.json() == ghost.json()
    forgot = [await api.post("/forgot-password", json={"email": email}) for email in (EMAIL, GHOST)]
    assert forgot[0].status_code == forgot[1].status_code == 200
    assert forgot[0].json() == forgot[1].json()
    sent, _ = await api.client.delivered()
    assert sent == []
