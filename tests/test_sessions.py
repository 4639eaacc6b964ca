"""Sessions over GraphQL: refresh rotation, expiry, logout, revocation, password and profile
changes, and the access-token checks every authenticated request relies on."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from authql.services.clock import FrozenClock
from authql.settings import _new_private_key_pem
from tests.support import PASSWORD, REFRESH, GraphQLClient

MY_SESSIONS = "query { mySessions { id current revokedAt } }"
LOGOUT = "mutation { logout }"
LOGOUT_ALL = "mutation { logoutAll }"
REVOKE_SESSION = "mutation($id: ID!) { revokeSession(id: $id) }"
CHANGE_PASSWORD = """
mutation($current: String!, $new: String!) {
  changePassword(currentPassword: $current, newPassword: $new)
}
"""
UPDATE_PROFILE = """
mutation($input: UpdateProfileInput!) {
  updateProfile(input: $input) { id email username name firstName lastName phone }
}
"""
PROFILE = "query { me { id email username name firstName lastName phone } }"
SESSION_STATUS = "query { sessionStatus { status claims } }"
NEW_PASSWORD = "a brand new passphrase"

MakeClient = Callable[..., GraphQLClient]


# --- helpers ---------------------------------------------------------------------------------


async def sign_in(client: GraphQLClient, identifier: str = "ada@example.com") -> dict[str, Any]:
    """Log in with the test password and return the login payload."""
    return (await client.login(identifier)).data["login"]  # type: ignore[no-any-return]


async def refresh(client: GraphQLClient, token: str) -> Any:
    return await client.gql(REFRESH, {"token": token})


async def my_sessions(client: GraphQLClient, token: str) -> Any:
    return await client.gql(MY_SESSIONS, token=token)


async def assert_refused(client: GraphQLClient, access_token: str) -> None:
    """The access token no longer authenticates: `me` is null, mySessions is UNAUTHORIZED."""
    assert await client.me(access_token) is None
    assert (await my_sessions(client, access_token)).error_code == "UNAUTHORIZED"


async def assert_signed_in(client: GraphQLClient, access_token: str) -> None:
    me = await client.me(access_token)
    assert me is not None
    assert (await my_sessions(client, access_token)).errors == []


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _flip(char: str) -> str:
    return "B" if char == "A" else "A"


# --- refresh ---------------------------------------------------------------------------------


async def test_refresh_rotates_both_tokens(client: GraphQLClient) -> None:
    """refresh returns a new access and refresh token; the new refresh token works."""
    first = await client.register("ada@example.com")
    result = await refresh(client, first["refreshToken"])
    rotated = result.data["refresh"]
    assert rotated["status"] == "OK"
    assert rotated["accessToken"] and rotated["refreshToken"]
    assert rotated["accessToken"] != first["accessToken"]
    assert rotated["refreshToken"] != first["refreshToken"]
    assert rotated["session"]["id"] == first["session"]["id"]
    assert rotated["user"]["id"] == first["user"]["id"]
    me = await client.me(rotated["accessToken"])
    assert me is not None and me["id"] == first["user"]["id"]
    again = await refresh(client, rotated["refreshToken"])
    assert again.data["refresh"]["status"] == "OK"


async def test_used_refresh_token_is_refused(client: GraphQLClient) -> None:
    """After one rotation the old refresh token gives INVALID_TOKEN."""
    first = await client.register("ada@example.com")
    assert (await refresh(client, first["refreshToken"])).data["refresh"]["status"] == "OK"
    replay = await refresh(client, first["refreshToken"])
    assert replay.error_code == "INVALID_TOKEN"
    assert replay.body["data"] is None or replay.body["data"]["refresh"] is None


async def test_refresh_reuse_revokes_the_whole_family(client: GraphQLClient) -> None:
    """Replaying a used refresh token kills every token of that session, newest included."""
    from authql.models import AuthEventRecord

    first = await client.register("ada@example.com")
    tokens = [first["refreshToken"]]
    access = [first["accessToken"]]
    for _ in range(3):
        rotated = (await refresh(client, tokens[-1])).data["refresh"]
        tokens.append(rotated["refreshToken"])
        access.append(rotated["accessToken"])
    await assert_signed_in(client, access[-1])

    replay = await refresh(client, tokens[0])
    assert replay.error_code == "INVALID_TOKEN"
    newest = await refresh(client, tokens[-1])
    assert newest.error_code == "INVALID_TOKEN"
    for token in access:
        await assert_refused(client, token)
    events = await AuthEventRecord.filter(type="REFRESH_REUSE_DETECTED").all()
    assert len(events) == 1
    assert str(events[0].user_id) == first["user"]["id"]
    assert str(events[0].session_id) == first["session"]["id"]
    assert events[0].success is False


async def test_reuse_in_one_session_leaves_other_sessions_alone(client: GraphQLClient) -> None:
    """Reuse detection revokes only the replayed token's session, not the user's others."""
    first = await client.register("ada@example.com")
    other = await sign_in(client)
    assert (await refresh(client, first["refreshToken"])).data["refresh"]["status"] == "OK"
    assert (await refresh(client, first["refreshToken"])).error_code == "INVALID_TOKEN"
    await assert_signed_in(client, other["accessToken"])
    assert (await refresh(client, other["refreshToken"])).data["refresh"]["status"] == "OK"


async def test_parallel_refreshes_with_one_token_yield_at_most_one_success(
    client: GraphQLClient,
) -> None:
    """Twenty concurrent refreshes of one token: at most one gets new tokens."""
    first = await client.register("ada@example.com")
    results = await asyncio.gather(*(refresh(client, first["refreshToken"]) for _ in range(20)))
    successes = [r for r in results if not r.errors]
    assert len(successes) <= 1
    assert all(r.error_code == "INVALID_TOKEN" for r in results if r.errors)
    assert all(r.status_code == 200 for r in results)


async def test_refresh_token_expires_at_the_absolute_session_lifetime(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """A refresh token works until refresh_token_ttl after sign-in, and never after."""
    client = make_client(refresh_token_ttl=3600)
    first = await client.register("ada@example.com")
    clock.advance(3590)
    rotated = (await refresh(client, first["refreshToken"])).data["refresh"]
    clock.advance(11)
    expired = await refresh(client, rotated["refreshToken"])
    assert expired.error_code == "INVALID_TOKEN"


async def test_refresh_token_expires_with_default_ttl(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """With default settings a refresh token dies after AUTHQL_REFRESH_TOKEN_TTL seconds."""
    first = await client.register("ada@example.com")
    clock.advance(client.services.settings.refresh_token_ttl + 1)
    assert (await refresh(client, first["refreshToken"])).error_code == "INVALID_TOKEN"


async def test_access_token_expires_after_its_ttl(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """Past access_token_ttl the access token is refused, though refresh still works."""
    first = await client.register("ada@example.com")
    await assert_signed_in(client, first["accessToken"])  # also warms the caches
    clock.advance(client.services.settings.access_token_ttl - 1)
    await assert_signed_in(client, first["accessToken"])
    clock.advance(2)
    await assert_refused(client, first["accessToken"])
    rotated = (await refresh(client, first["refreshToken"])).data["refresh"]
    await assert_signed_in(client, rotated["accessToken"])


async def test_garbage_refresh_token_is_invalid(client: GraphQLClient) -> None:
    """A refresh token that was never issued gives INVALID_TOKEN."""
    await client.register("ada@example.com")
    for token in ("garbage", "", "x" * 5000, str(uuid.uuid4())):
        assert (await refresh(client, token)).error_code == "INVALID_TOKEN"


async def test_access_token_is_not_a_refresh_token(client: GraphQLClient) -> None:
    """Presenting the access token to refresh gives INVALID_TOKEN."""
    first = await client.register("ada@example.com")
    assert (await refresh(client, first["accessToken"])).error_code == "INVALID_TOKEN"


# --- logout, logoutAll, revokeSession --------------------------------------------------------


async def test_logout_ends_only_the_current_session(client: GraphQLClient) -> None:
    """After logout its access token is refused on the very next request, its refresh token
    is refused, and the user's other sessions keep working."""
    first = await client.register("ada@example.com")
    other = await sign_in(client)
    await assert_signed_in(client, first["accessToken"])  # warm the session cache
    result = await client.gql(LOGOUT, token=first["accessToken"])
    assert result.data == {"logout": True}
    await assert_refused(client, first["accessToken"])
    assert (await client.gql(LOGOUT, token=first["accessToken"])).error_code == "UNAUTHORIZED"
    assert (await refresh(client, first["refreshToken"])).error_code == "INVALID_TOKEN"
    await assert_signed_in(client, other["accessToken"])
    assert (await refresh(client, other["refreshToken"])).data["refresh"]["status"] == "OK"


async def test_logout_requires_a_session(client: GraphQLClient) -> None:
    """logout without a token is UNAUTHORIZED."""
    assert (await client.gql(LOGOUT)).error_code == "UNAUTHORIZED"


async def test_logout_all_kills_every_session(client: GraphQLClient) -> None:
    """logoutAll returns how many sessions it ended, and every one of them is dead."""
    sessions = [await client.register("ada@example.com")]
    sessions += [await sign_in(client) for _ in range(2)]
    for session in sessions:
        await assert_signed_in(client, session["accessToken"])
    result = await client.gql(LOGOUT_ALL, token=sessions[1]["accessToken"])
    assert result.data == {"logoutAll": 3}
    for session in sessions:
        await assert_refused(client, session["accessToken"])
        assert (await refresh(client, session["refreshToken"])).error_code == "INVALID_TOKEN"


async def test_logout_all_counts_the_sessions_my_sessions_lists(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """logoutAll's count matches the live sessions mySessions showed; expired ones are not
    counted as signed out again."""
    client = make_client(refresh_token_ttl=3600)
    await client.register("ada@example.com")  # expires before logoutAll
    clock.advance(3000)
    live = [await sign_in(client) for _ in range(2)]
    clock.advance(700)
    listed = (await my_sessions(client, live[0]["accessToken"])).data["mySessions"]
    assert {row["id"] for row in listed} == {s["session"]["id"] for s in live}
    result = await client.gql(LOGOUT_ALL, token=live[0]["accessToken"])
    assert result.data == {"logoutAll": len(listed)}


async def test_logout_all_leaves_other_users_alone(client: GraphQLClient) -> None:
    """logoutAll ends the caller's sessions only."""
    ada = await client.register("ada@example.com")
    bob = await client.register("bob@example.com")
    assert (await client.gql(LOGOUT_ALL, token=ada["accessToken"])).data == {"logoutAll": 1}
    await assert_signed_in(client, bob["accessToken"])


async def test_revoke_own_other_session(client: GraphQLClient) -> None:
    """revokeSession ends another session of the caller at once; the caller's stays."""
    first = await client.register("ada@example.com")
    other = await sign_in(client)
    await assert_signed_in(client, other["accessToken"])  # warm the session cache
    result = await client.gql(
        REVOKE_SESSION, {"id": other["session"]["id"]}, token=first["accessToken"]
    )
    assert result.data == {"revokeSession": True}
    await assert_refused(client, other["accessToken"])
    assert (await refresh(client, other["refreshToken"])).error_code == "INVALID_TOKEN"
    await assert_signed_in(client, first["accessToken"])
    again = await client.gql(
        REVOKE_SESSION, {"id": other["session"]["id"]}, token=first["accessToken"]
    )
    assert again.error_code == "NOT_FOUND"


async def test_revoke_session_not_found_for_foreign_or_bogus_ids(client: GraphQLClient) -> None:
    """Another user's session id, a random UUID or garbage give NOT_FOUND and change nothing."""
    ada = await client.register("ada@example.com")
    bob = await client.register("bob@example.com")
    for session_id in (bob["session"]["id"], str(uuid.uuid4()), "garbage", ""):
        result = await client.gql(REVOKE_SESSION, {"id": session_id}, token=ada["accessToken"])
        assert result.error_code == "NOT_FOUND", session_id
    await assert_signed_in(client, bob["accessToken"])
    await assert_signed_in(client, ada["accessToken"])
    assert (await refresh(client, bob["refreshToken"])).data["refresh"]["status"] == "OK"


async def test_revoke_session_requires_a_session(client: GraphQLClient) -> None:
    """revokeSession without a token is UNAUTHORIZED."""
    ada = await client.register("ada@example.com")
    result = await client.gql(REVOKE_SESSION, {"id": ada["session"]["id"]})
    assert result.error_code == "UNAUTHORIZED"
    await assert_signed_in(client, ada["accessToken"])


# --- mySessions ------------------------------------------------------------------------------


async def test_my_sessions_lists_live_sessions_marking_the_current_one(
    client: GraphQLClient,
) -> None:
    """mySessions lists the caller's live sessions; only the caller's own is current."""
    first = await client.register("ada@example.com")
    second = await sign_in(client)
    third = await sign_in(client)
    await client.register("bob@example.com")
    listed = (await my_sessions(client, second["accessToken"])).data["mySessions"]
    ids = {row["id"] for row in listed}
    assert ids == {first["session"]["id"], second["session"]["id"], third["session"]["id"]}
    current = [row["id"] for row in listed if row["current"]]
    assert current == [second["session"]["id"]]
    assert all(row["revokedAt"] is None for row in listed)


async def test_my_sessions_excludes_revoked_sessions(client: GraphQLClient) -> None:
    """Sessions ended by logout or revokeSession disappear from mySessions."""
    first = await client.register("ada@example.com")
    second = await sign_in(client)
    third = await sign_in(client)
    await client.gql(LOGOUT, token=second["accessToken"])
    await client.gql(REVOKE_SESSION, {"id": third["session"]["id"]}, token=first["accessToken"])
    listed = (await my_sessions(client, first["accessToken"])).data["mySessions"]
    assert [(row["id"], row["current"]) for row in listed] == [(first["session"]["id"], True)]


async def test_my_sessions_requires_a_session(client: GraphQLClient) -> None:
    """mySessions without a token is UNAUTHORIZED."""
    assert (await client.gql(MY_SESSIONS)).error_code == "UNAUTHORIZED"


# --- changePassword --------------------------------------------------------------------------


async def test_change_password_wrong_current_password(client: GraphQLClient) -> None:
    """A wrong current password is INVALID_CREDENTIALS and changes nothing."""
    first = await client.register("ada@example.com")
    result = await client.gql(
        CHANGE_PASSWORD,
        {"current": "not my password", "new": NEW_PASSWORD},
        token=first["accessToken"],
    )
    assert result.error_code == "INVALID_CREDENTIALS"
    assert (await client.login("ada@example.com", PASSWORD)).data["login"]["status"] == "OK"
    assert (await client.login("ada@example.com", NEW_PASSWORD)).error_code == (
        "INVALID_CREDENTIALS"
    )


async def test_change_password_rejects_a_weak_new_password(client: GraphQLClient) -> None:
    """A too-short new password is VALIDATION_ERROR naming newPassword."""
    first = await client.register("ada@example.com")
    result = await client.gql(
        CHANGE_PASSWORD, {"current": PASSWORD, "new": "short"}, token=first["accessToken"]
    )
    assert result.error_code == "VALIDATION_ERROR"
    assert set(result.errors[0]["extensions"]["fields"]) == {"newPassword"}
    assert (await client.login("ada@example.com", PASSWORD)).data["login"]["status"] == "OK"


async def test_change_password_requires_a_session(client: GraphQLClient) -> None:
    """changePassword without a token is UNAUTHORIZED."""
    await client.register("ada@example.com")
    result = await client.gql(CHANGE_PASSWORD, {"current": PASSWORD, "new": NEW_PASSWORD})
    assert result.error_code == "UNAUTHORIZED"


async def test_change_password_revokes_other_sessions_and_keeps_this_one(
    client: GraphQLClient,
) -> None:
    """Success ends every other session at once, keeps the current one, and swaps passwords."""
    first = await client.register("ada@example.com")
    others = [await sign_in(client) for _ in range(2)]
    for session in others:
        await assert_signed_in(client, session["accessToken"])  # warm the session cache
    result = await client.gql(
        CHANGE_PASSWORD, {"current": PASSWORD, "new": NEW_PASSWORD}, token=first["accessToken"]
    )
    assert result.data == {"changePassword": True}
    for session in others:
        await assert_refused(client, session["accessToken"])
        assert (await refresh(client, session["refreshToken"])).error_code == "INVALID_TOKEN"
    await assert_signed_in(client, first["accessToken"])
    listed = (await my_sessions(client, first["accessToken"])).data["mySessions"]
    assert [row["id"] for row in listed] == [first["session"]["id"]]
    assert (await refresh(client, first["refreshToken"])).data["refresh"]["status"] == "OK"
    old = await client.login("ada@example.com", PASSWORD)
    assert old.error_code == "INVALID_CREDENTIALS"
    assert (await client.login("ada@example.com", NEW_PASSWORD)).data["login"]["status"] == "OK"


# --- updateProfile ---------------------------------------------------------------------------


async def test_update_profile_changes_only_given_fields(client: GraphQLClient) -> None:
    """Fields left out of the input keep their values; `me` shows the change at once."""
    first = await client.register(
        "ada@example.com", username="ada_l", name="Ada", firstName="Ada", lastName="Lovelace"
    )
    token = first["accessToken"]
    before = (await client.gql(PROFILE, token=token)).data["me"]  # warms the user cache
    result = await client.gql(
        UPDATE_PROFILE, {"input": {"name": "Countess", "phone": "+44 20 7946 0958"}}, token=token
    )
    updated = result.data["updateProfile"]
    expected = {**before, "name": "Countess", "phone": "+442079460958"}
    assert updated == expected
    assert (await client.gql(PROFILE, token=token)).data["me"] == expected


async def test_update_profile_username_is_visible_to_login_and_me(client: GraphQLClient) -> None:
    """A new username shows in `me` at once and signs in; the old one no longer does."""
    first = await client.register("ada@example.com", username="ada_l")
    token = first["accessToken"]
    assert (await client.me(token))["username"] == "ada_l"  # type: ignore[index]
    result = await client.gql(UPDATE_PROFILE, {"input": {"username": "Countess"}}, token=token)
    assert result.data["updateProfile"]["username"] == "Countess"
    assert (await client.me(token))["username"] == "Countess"  # type: ignore[index]
    assert (await client.login("countess")).data["login"]["status"] == "OK"
    assert (await client.login("ada_l")).error_code == "INVALID_CREDENTIALS"


async def test_update_profile_taken_username_is_a_conflict(client: GraphQLClient) -> None:
    """A username another account holds (in any case) gives CONFLICT and changes nothing."""
    await client.register("bob@example.com", username="bob")
    ada = await client.register("ada@example.com", username="ada_l")
    result = await client.gql(
        UPDATE_PROFILE, {"input": {"username": "BOB", "name": "X"}}, token=ada["accessToken"]
    )
    assert result.error_code == "CONFLICT"
    assert "username" in result.errors[0]["extensions"]["fields"]
    me = (await client.gql(PROFILE, token=ada["accessToken"])).data["me"]
    assert me["username"] == "ada_l" and me["name"] is None


async def test_update_profile_invalid_phone_is_a_validation_error(client: GraphQLClient) -> None:
    """An invalid phone number gives VALIDATION_ERROR naming phone, and changes nothing."""
    ada = await client.register("ada@example.com")
    result = await client.gql(
        UPDATE_PROFILE, {"input": {"phone": "call me", "name": "X"}}, token=ada["accessToken"]
    )
    assert result.error_code == "VALIDATION_ERROR"
    assert set(result.errors[0]["extensions"]["fields"]) == {"phone"}
    me = (await client.gql(PROFILE, token=ada["accessToken"])).data["me"]
    assert me["phone"] is None and me["name"] is None


async def test_update_profile_names_fields_as_the_schema_does(client: GraphQLClient) -> None:
    """A too-long firstName is reported under its GraphQL name, as register does."""
    ada = await client.register("ada@example.com")
    result = await client.gql(
        UPDATE_PROFILE, {"input": {"firstName": "x" * 101}}, token=ada["accessToken"]
    )
    assert result.error_code == "VALIDATION_ERROR"
    assert result.errors[0]["extensions"]["fields"] == {"firstName": "At most 100 characters."}


async def test_update_profile_reports_every_invalid_field(client: GraphQLClient) -> None:
    """All invalid fields are reported at once under extensions.fields, as register does."""
    ada = await client.register("ada@example.com")
    result = await client.gql(
        UPDATE_PROFILE, {"input": {"username": "x", "phone": "call me"}}, token=ada["accessToken"]
    )
    assert result.error_code == "VALIDATION_ERROR"
    assert set(result.errors[0]["extensions"]["fields"]) == {"username", "phone"}


async def test_update_profile_requires_a_session(client: GraphQLClient) -> None:
    """updateProfile without a token is UNAUTHORIZED."""
    result = await client.gql(UPDATE_PROFILE, {"input": {"name": "X"}})
    assert result.error_code == "UNAUTHORIZED"


# --- sessionStatus ---------------------------------------------------------------------------


async def test_session_status_anonymous(client: GraphQLClient) -> None:
    """Without a token sessionStatus is anonymous with null claims."""
    result = await client.gql(SESSION_STATUS)
    assert result.data["sessionStatus"] == {"status": "anonymous", "claims": None}


async def test_session_status_ok_with_claims(client: GraphQLClient, clock: FrozenClock) -> None:
    """With a valid token sessionStatus is ok and carries the verified claims."""
    first = await client.register("ada@example.com")
    status = (await client.gql(SESSION_STATUS, token=first["accessToken"])).data["sessionStatus"]
    assert status["status"] == "ok"
    claims = status["claims"]
    settings = client.services.settings
    assert claims["sub"] == first["user"]["id"]
    assert claims["sid"] == first["session"]["id"]
    assert claims["roles"] == []
    assert claims["iss"] == settings.issuer
    assert claims["aud"] == settings.jwt_audience
    assert claims["exp"] == int(clock.now().timestamp()) + settings.access_token_ttl


async def test_session_status_after_logout_is_anonymous(client: GraphQLClient) -> None:
    """A revoked session's token yields anonymous status, not its old claims."""
    first = await client.register("ada@example.com")
    await client.gql(LOGOUT, token=first["accessToken"])
    result = await client.gql(SESSION_STATUS, token=first["accessToken"])
    assert result.data["sessionStatus"] == {"status": "anonymous", "claims": None}


# --- forged access tokens --------------------------------------------------------------------


async def assert_forgery_refused(client: GraphQLClient, token: str) -> None:
    """A forged token authenticates nothing: `me` is null and mutations are UNAUTHORIZED."""
    assert await client.me(token) is None
    assert (await my_sessions(client, token)).error_code == "UNAUTHORIZED"
    assert (await client.gql(LOGOUT_ALL, token=token)).error_code == "UNAUTHORIZED"
    status = (await client.gql(SESSION_STATUS, token=token)).data["sessionStatus"]
    assert status == {"status": "anonymous", "claims": None}


async def test_tampered_signature_is_refused(client: GraphQLClient) -> None:
    """Changing one character in the middle of the signature makes the token worthless."""
    ada = await client.register("ada@example.com")
    header, payload, signature = ada["accessToken"].split(".")
    middle = len(signature) // 2
    forged_signature = signature[:middle] + _flip(signature[middle]) + signature[middle + 1 :]
    await assert_forgery_refused(client, f"{header}.{payload}.{forged_signature}")
    await assert_signed_in(client, ada["accessToken"])


async def test_tampered_payload_is_refused(client: GraphQLClient) -> None:
    """Rewriting the claims (another user, extra roles) under the old signature is refused."""
    ada = await client.register("ada@example.com")
    bob = await client.register("bob@example.com")
    header, payload, signature = ada["accessToken"].split(".")
    middle = len(payload) // 2
    flipped = payload[:middle] + _flip(payload[middle]) + payload[middle + 1 :]
    await assert_forgery_refused(client, f"{header}.{flipped}.{signature}")
    claims = json.loads(_b64url_decode(payload))
    for change in (
        {"roles": ["admin"]},
        {"sub": bob["user"]["id"], "sid": bob["session"]["id"]},
        {"exp": claims["exp"] + 86_400},
    ):
        forged_payload = _b64url(json.dumps({**claims, **change}).encode())
        await assert_forgery_refused(client, f"{header}.{forged_payload}.{signature}")


async def test_token_signed_by_another_key_is_refused(make_client: MakeClient) -> None:
    """A token from a server with another private key is refused, even with our kid."""
    client = make_client()
    stranger = make_client(jwt_private_key=_new_private_key_pem())
    ada = await client.register("ada@example.com")
    foreign = (await stranger.login("ada@example.com")).data["login"]
    assert await stranger.me(foreign["accessToken"]) is not None
    await assert_forgery_refused(client, foreign["accessToken"])

    # The same claims, signed with a foreign key but claiming our key id.
    claims = jwt.decode(ada["accessToken"], options={"verify_signature": False})
    other_key = serialization.load_pem_private_key(_new_private_key_pem().encode(), None)
    forged = jwt.encode(
        claims,
        other_key,  # type: ignore[arg-type]
        algorithm="EdDSA",
        headers={"kid": client.services.access_tokens.kid, "typ": "at+jwt"},
    )
    await assert_forgery_refused(client, forged)


async def test_unsigned_alg_none_token_is_refused(client: GraphQLClient) -> None:
    """An `alg: none` token with genuine claims and our key id is refused."""
    ada = await client.register("ada@example.com")
    header, payload, _ = ada["accessToken"].split(".")
    none_header = {**json.loads(_b64url_decode(header)), "alg": "none"}
    unsigned = f"{_b64url(json.dumps(none_header).encode())}.{payload}."
    await assert_forgery_refused(client, unsigned)
    await assert_forgery_refused(client, unsigned.rstrip("."))


async def test_hmac_token_with_public_key_as_secret_is_refused(client: GraphQLClient) -> None:
    """Key confusion: an HS256 token keyed with our public JWK/PEM is refused."""
    ada = await client.register("ada@example.com")
    header, payload, _ = ada["accessToken"].split(".")
    claims = json.loads(_b64url_decode(payload))
    tokens = client.services.access_tokens
    public_pem = tokens._public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = {**json.loads(_b64url_decode(header)), "alg": "HS256"}
    signing_input = f"{_b64url(json.dumps(hs_header).encode())}.{payload}"
    for secret in (public_pem, json.dumps(tokens.jwks()["keys"][0]).encode()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        await assert_forgery_refused(client, f"{signing_input}.{_b64url(mac)}")
    assert claims["sub"] == ada["user"]["id"]
