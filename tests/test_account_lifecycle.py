"""Deleting an account and restoring it over GraphQL: the owner's re-check, what a deleted
account looks like from outside (like one that never existed), the restore window, the
purge after it, and admins' deleteUser."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from authql.models import (
    AuthEventRecord,
    BackupCode,
    Identity,
    OneTimeToken,
    RefreshToken,
    Session,
    TotpCredential,
    TwoFactorChallenge,
    User,
    UserRole,
)
from authql.resolvers.accounts import create_admin
from authql.resolvers.cleanup import KEPT_DETAIL_KEYS
from authql.services.clock import FrozenClock
from authql.services.mail import MailMessage
from tests.smtp import extract_link, extract_token, text_of
from tests.support import PASSWORD, REFRESH, GraphQLClient
from tests.totp_helpers import STEP, enrol, totp_code

MakeClient = Callable[..., GraphQLClient]

ADA = "ada@example.com"
GHOST = "ghost@example.com"
ADMIN = "root@example.com"
DAY = 86_400
RETENTION = 30 * DAY

DELETE_ACCOUNT = "mutation($p: String, $c: String) { deleteAccount(password: $p, code: $c) }"
REQUEST_RESTORE = "mutation($e: String!) { requestAccountRestore(email: $e) }"
RESTORE = """
mutation($t: String!) {
  restoreAccount(token: $t) {
    status accessToken refreshToken challengeToken twoFactorMethods
    user { id email emailVerified } session { id method }
  }
}
"""
VERIFY_TWO_FACTOR = """
mutation($t: String!, $c: String!) {
  verifyTwoFactor(challengeToken: $t, code: $c) { status accessToken user { id } }
}
"""
DELETE_USER = "mutation($id: ID!, $hard: Boolean) { deleteUser(userId: $id, hard: $hard) }"
DELETE_USER_DEFAULT = "mutation($id: ID!) { deleteUser(userId: $id) }"
ADMIN_USER = "query($id: ID!) { user(id: $id) { id email deletedAt } }"
CHECK_TWO_FACTOR = "mutation($i: String!) { checkTwoFactor(identifier: $i) { requiresTwoFactor } }"
SEND_MAGIC_LINK = "mutation($e: String!) { sendMagicLink(email: $e) }"
VERIFY_MAGIC_LINK = "mutation($t: String!) { verifyMagicLink(token: $t) { accessToken } }"
REQUEST_RESET = "mutation($e: String!) { requestPasswordReset(email: $e) }"
CLEANUP = "mutation { cleanupSessions }"
REGISTER_STATUS = """
mutation($e: String!, $p: String!) { register(input: {email: $e, password: $p}) { status } }
"""


# --- helpers ---------------------------------------------------------------------------------


async def delete(
    client: GraphQLClient, token: str, password: str | None = PASSWORD, code: str | None = None
) -> Any:
    return await client.gql(DELETE_ACCOUNT, {"p": password, "c": code}, token=token)


async def mails_to(client: GraphQLClient, address: str) -> list[MailMessage]:
    mails, _ = await client.delivered()
    return [mail for mail in mails if mail.to == address]


async def restore_token(client: GraphQLClient, address: str) -> str:
    """Ask for a restore link for ``address`` and read it from the mail that arrived."""
    assert (await client.gql(REQUEST_RESTORE, {"e": address})).data["requestAccountRestore"]
    mails = [m for m in await mails_to(client, address) if "Restore" in m.subject]
    assert mails, f"no restore mail to {address}"
    return extract_token(mails[-1])


async def admin_token(client: GraphQLClient) -> str:
    await create_admin(client.services.passwords, email=ADMIN, password=PASSWORD)
    return (await client.login(ADMIN)).data["login"]["accessToken"]  # type: ignore[no-any-return]


async def events(user_id: str, kind: str) -> list[AuthEventRecord]:
    return await AuthEventRecord.filter(user_id=user_id, type=kind).order_by("at")


# --- deleting: what the world sees -----------------------------------------------------------


async def test_deleted_account_signs_in_like_an_unknown_one(client: GraphQLClient) -> None:
    """After deletion the right password gets exactly the answer an unknown email gets, and
    the preflight, magic-link and reset requests reveal nothing and send nothing."""
    ada = await client.register(ADA)
    assert (await delete(client, ada["accessToken"])).data == {"deleteAccount": True}
    deleted = await client.login(ADA)
    unknown = await client.login(GHOST)
    assert deleted.error_code == unknown.error_code == "INVALID_CREDENTIALS"
    assert deleted.errors[0]["message"] == unknown.errors[0]["message"]
    assert deleted.errors[0]["extensions"] == unknown.errors[0]["extensions"]
    assert (await client.gql(CHECK_TWO_FACTOR, {"i": ADA})).data == (
        await client.gql(CHECK_TWO_FACTOR, {"i": GHOST})
    ).data
    for document in (SEND_MAGIC_LINK, REQUEST_RESET):
        assert (await client.gql(document, {"e": ADA})).body == (
            await client.gql(document, {"e": GHOST})
        ).body
    assert await mails_to(client, ADA) == []


async def test_deletion_refuses_every_token_at_once(client: GraphQLClient) -> None:
    """The deleting session's access token, another device's session, refresh tokens and a
    magic link mailed before the deletion all stop working with the deletion."""
    ada = await client.register(ADA)
    other = (await client.login(ADA)).data["login"]
    assert (await client.me(ada["accessToken"]))["email"] == ADA  # type: ignore[index]
    await client.gql(SEND_MAGIC_LINK, {"e": ADA})
    link = (await mails_to(client, ADA))[-1]
    assert (await delete(client, ada["accessToken"])).data["deleteAccount"] is True
    assert await client.me(ada["accessToken"]) is None
    assert await client.me(other["accessToken"]) is None
    for refresh_token in (ada["refreshToken"], other["refreshToken"]):
        assert (await client.gql(REFRESH, {"token": refresh_token})).error_code == "INVALID_TOKEN"
    used = await client.gql(VERIFY_MAGIC_LINK, {"t": extract_token(link)})
    assert used.error_code == "INVALID_TOKEN"
    again = await delete(client, ada["accessToken"])
    assert again.error_code == "UNAUTHORIZED"


async def test_deletion_is_audited_as_soft(client: GraphQLClient) -> None:
    """A self-service deletion emits ACCOUNT_DELETED with mode soft, naming the owner."""
    ada = await client.register(ADA)
    await delete(client, ada["accessToken"])
    (event,) = await events(ada["user"]["id"], "ACCOUNT_DELETED")
    assert event.detail == {"mode": "soft", "actor": ada["user"]["id"]}
    assert str(event.session_id) == ada["session"]["id"]


# --- deleting: re-checking the owner ---------------------------------------------------------


async def test_delete_needs_the_password_and_wrong_ones_lock(make_client: MakeClient) -> None:
    """A missing or wrong password is INVALID_CREDENTIALS and deletes nothing; wrong ones
    (not missing ones) count toward the lockout, after which even the right one waits."""
    client = make_client(lockout_threshold=2)
    ada = await client.register(ADA)
    token = ada["accessToken"]
    for _ in range(3):
        assert (await delete(client, token, None)).error_code == "INVALID_CREDENTIALS"
    assert (await delete(client, token, "not the password")).error_code == "INVALID_CREDENTIALS"
    assert (await client.me(token)) is not None
    assert (await delete(client, token, "still not it")).error_code == "INVALID_CREDENTIALS"
    locked = await delete(client, token)
    assert locked.error_code == "ACCOUNT_LOCKED"
    assert locked.errors[0]["extensions"]["retryAfter"] > 0
    assert (await client.login(ADA)).error_code == "ACCOUNT_LOCKED"
    assert await User.filter(email=ADA, deleted_at=None).exists()


async def test_delete_with_two_factor_needs_a_current_code(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """With 2FA on, the password alone or with a wrong code is INVALID_TOKEN; a wrong
    password is INVALID_CREDENTIALS even with a good code; password + backup code works."""
    ada = await client.register(ADA)
    token = ada["accessToken"]
    enrolment = await enrol(client, clock, access_token=token)
    clock.advance(STEP)
    assert (await delete(client, token)).error_code == "INVALID_TOKEN"
    assert (await delete(client, token, code="000000")).error_code == "INVALID_TOKEN"
    good = totp_code(enrolment.secret, clock)
    assert (await delete(client, token, "wrong", code=good)).error_code == "INVALID_CREDENTIALS"
    assert await client.me(token) is not None
    done = await delete(client, token, code=enrolment.backup_codes[0])
    assert done.data["deleteAccount"] is True
    assert await client.me(token) is None


async def test_delete_with_totp_code(client: GraphQLClient, clock: FrozenClock) -> None:
    """An account with 2FA deletes itself with its password and the app's current code."""
    ada = await client.register(ADA)
    enrolment = await enrol(client, clock, access_token=ada["accessToken"])
    clock.advance(STEP)
    code = totp_code(enrolment.secret, clock)
    done = await delete(client, ada["accessToken"], code=code)
    assert done.data["deleteAccount"] is True


async def test_account_without_password_or_two_factor_needs_only_its_session(
    client: GraphQLClient,
) -> None:
    """An account with no password and no 2FA (signed in by magic link) deletes itself with
    nothing but its session."""
    await User.create(id=uuid.uuid4(), email=ADA, email_verified=True)
    await client.gql(SEND_MAGIC_LINK, {"e": ADA})
    link = (await mails_to(client, ADA))[-1]
    token = (await client.gql(VERIFY_MAGIC_LINK, {"t": extract_token(link)})).data[
        "verifyMagicLink"
    ]["accessToken"]
    assert (await delete(client, token, None)).data["deleteAccount"] is True
    assert (await client.gql(DELETE_ACCOUNT)).error_code == "UNAUTHORIZED"


# --- the reserved email ----------------------------------------------------------------------


async def test_email_stays_reserved_while_restorable(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """Registering a deleted account's email is refused like any taken email (same code,
    message and fields) for the whole window; after it the address is free again."""
    ada = await client.register(ADA)
    await client.register("bob@example.com")
    await delete(client, ada["accessToken"])
    reserved = await client.gql(REGISTER_STATUS, {"e": ADA, "p": PASSWORD})
    live = await client.gql(REGISTER_STATUS, {"e": "bob@example.com", "p": PASSWORD})
    assert reserved.error_code == live.error_code == "CONFLICT"
    assert reserved.errors[0]["message"] == live.errors[0]["message"]
    assert reserved.errors[0]["extensions"] == live.errors[0]["extensions"]
    clock.advance(RETENTION - 60)
    again = await client.gql(REGISTER_STATUS, {"e": ADA, "p": PASSWORD})
    assert again.error_code == "CONFLICT"
    clock.advance(61)
    fresh = await client.register(ADA)
    assert fresh["user"]["id"] != ada["user"]["id"]
    assert not await User.filter(id=ada["user"]["id"]).exists()


# --- restoring -------------------------------------------------------------------------------


async def test_restore_inside_the_window_signs_in(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """On day 29 the emailed link restores the account and signs in; the password works
    again, the old tokens stay dead, and ACCOUNT_RESTORED is emitted."""
    ada = await client.register(ADA)
    await delete(client, ada["accessToken"])
    clock.advance(29 * DAY)
    restored = (await client.gql(RESTORE, {"t": await restore_token(client, ADA)})).data[
        "restoreAccount"
    ]
    assert restored["status"] == "OK"
    assert restored["user"] == {"id": ada["user"]["id"], "email": ADA, "emailVerified": True}
    assert restored["session"]["method"] == "account_restore"
    assert (await client.me(restored["accessToken"]))["email"] == ADA  # type: ignore[index]
    assert await client.me(ada["accessToken"]) is None
    assert (await client.login(ADA)).data["login"]["status"] == "OK"
    assert len(await events(ada["user"]["id"], "ACCOUNT_RESTORED")) == 1


async def test_restore_link_is_single_use(client: GraphQLClient) -> None:
    """A restore link works once; the second use is INVALID_TOKEN."""
    ada = await client.register(ADA)
    await delete(client, ada["accessToken"])
    token = await restore_token(client, ADA)
    assert (await client.gql(RESTORE, {"t": token})).data["restoreAccount"]["status"] == "OK"
    assert (await client.gql(RESTORE, {"t": token})).error_code == "INVALID_TOKEN"
    assert (await client.gql(RESTORE, {"t": "not-a-token"})).error_code == "INVALID_TOKEN"


async def test_restore_request_answers_alike_for_every_address(client: GraphQLClient) -> None:
    """Unknown, live and deleted addresses get the same answer; only the deleted account's
    owner gets a mail, whose link opens the restore page and expires within the hour."""
    ada = await client.register(ADA)
    await client.register("bob@example.com")
    await delete(client, ada["accessToken"])
    answers = [
        (await client.gql(REQUEST_RESTORE, {"e": address})).body
        for address in (ADA, "bob@example.com", GHOST)
    ]
    assert answers == [{"data": {"requestAccountRestore": True}}] * 3
    mails, _ = await client.delivered()
    assert [mail.to for mail in mails] == [ADA]
    assert extract_link(mails[0]).startswith("http://127.0.0.1:8000/restore-account?token=")
    assert "60 minutes" in text_of(mails[0])


async def test_restore_outside_the_window_restores_nothing(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """A link asked for near the end of the window dies with it (INVALID_TOKEN, the
    account stays deleted), and past the window no link is sent at all."""
    ada = await client.register(ADA)
    await delete(client, ada["accessToken"])
    clock.advance(RETENTION - 10 * 60)
    token = await restore_token(client, ADA)
    clock.advance(10 * 60)
    refused = await client.gql(RESTORE, {"t": token})
    assert refused.error_code == "INVALID_TOKEN"
    assert (await client.login(ADA)).error_code == "INVALID_CREDENTIALS"
    before = len(await mails_to(client, ADA))
    await client.gql(REQUEST_RESTORE, {"e": ADA})
    assert len(await mails_to(client, ADA)) == before


async def test_shortened_retention_refuses_an_older_link(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """A live link for an account that a shortened retention put outside the window is
    refused as expired, and the account stays deleted."""
    client = make_client()
    ada = await client.register(ADA)
    await delete(client, ada["accessToken"])
    clock.advance(2 * DAY)
    token = await restore_token(client, ADA)
    shortened = make_client(deleted_retention_days=1)
    refused = await shortened.gql(RESTORE, {"t": token})
    assert refused.error_code == "INVALID_TOKEN"
    assert await User.filter(id=ada["user"]["id"], deleted_at__isnull=False).exists()


async def test_restore_with_two_factor_asks_for_the_code(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """Restoring an account with 2FA answers TWO_FACTOR_REQUIRED with a challenge (no
    tokens); the next authenticator code completes the sign-in."""
    ada = await client.register(ADA)
    enrolment = await enrol(client, clock, access_token=ada["accessToken"])
    clock.advance(STEP)
    await delete(client, ada["accessToken"], code=totp_code(enrolment.secret, clock))
    pending = (await client.gql(RESTORE, {"t": await restore_token(client, ADA)})).data[
        "restoreAccount"
    ]
    assert pending["status"] == "TWO_FACTOR_REQUIRED"
    assert pending["accessToken"] is None and pending["challengeToken"]
    assert "TOTP" in pending["twoFactorMethods"]
    clock.advance(STEP)
    done = await client.gql(
        VERIFY_TWO_FACTOR, {"t": pending["challengeToken"], "c": totp_code(enrolment.secret, clock)}
    )
    assert done.data["verifyTwoFactor"]["status"] == "OK"


# --- the purge -------------------------------------------------------------------------------


async def test_purge_after_the_window_leaves_nothing_personal(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """Past the window, cleanup removes the account with its sessions, tokens, identities,
    TOTP secret and backup codes; its audit events keep the user id and no ip, user agent
    or personal detail."""
    ada = await client.register(ADA, username="ada", phone="+14155550100")
    user_id = ada["user"]["id"]
    await enrol(client, clock, access_token=ada["accessToken"])
    await Identity.create(
        user_id=user_id, provider="acme", subject="s-1", email=ADA, linked_at=clock.now()
    )
    await client.gql(SEND_MAGIC_LINK, {"e": ADA})
    await client.delivered()
    clock.advance(STEP)
    assert (await client.login(ADA)).data["login"]["status"] == "TWO_FACTOR_REQUIRED"
    await UserRole.create(user_id=user_id, role="editor")
    assert await BackupCode.filter(user_id=user_id).exists()
    enrolled = await TotpCredential.get(user_id=user_id)
    assert enrolled.secret_encrypted
    await delete(
        client,
        ada["accessToken"],
        code=totp_code(client.services.totp.decrypt(enrolled.secret_encrypted), clock),
    )
    assert await AuthEventRecord.filter(user_id=user_id, ip_address__isnull=False).exists()
    clock.advance(RETENTION)
    admin = await admin_token(client)
    assert (await client.gql(CLEANUP, token=admin)).data["cleanupSessions"] >= 1
    assert not await User.filter(id=user_id).exists()
    for model in (Session, OneTimeToken, TotpCredential, BackupCode, TwoFactorChallenge):
        assert not await model.filter(user_id=user_id).exists(), model.__name__
    assert not await RefreshToken.filter(session__user_id=user_id).exists()
    assert not await Identity.filter(user_id=user_id).exists()
    assert not await UserRole.filter(user_id=user_id).exists()
    audit = await AuthEventRecord.filter(user_id=user_id)
    assert {event.type for event in audit} >= {"REGISTERED", "ACCOUNT_DELETED"}
    for event in audit:
        assert event.ip_address is None and event.user_agent is None
        assert set(event.detail) <= KEPT_DETAIL_KEYS
    assert (await client.register(ADA, username="ada", phone="+14155550100"))["user"]["id"]


# --- admins ----------------------------------------------------------------------------------


async def test_admin_deletes_softly_by_default(client: GraphQLClient) -> None:
    """deleteUser is soft unless hard: the user is signed out at once, shows deletedAt to
    admins, can restore, and the event names the admin as actor."""
    admin = await admin_token(client)
    admin_id = (await client.me(admin))["id"]  # type: ignore[index]
    bob = await client.register("bob@example.com")
    bob_id = bob["user"]["id"]
    assert (await client.gql(DELETE_USER_DEFAULT, {"id": bob_id}, token=admin)).data == {
        "deleteUser": True
    }
    assert await client.me(bob["accessToken"]) is None
    shown = (await client.gql(ADMIN_USER, {"id": bob_id}, token=admin)).data["user"]
    assert shown["deletedAt"] is not None
    (event,) = await events(bob_id, "ACCOUNT_DELETED")
    assert event.detail == {"mode": "soft", "actor": admin_id}
    again = await client.gql(DELETE_USER, {"id": bob_id, "hard": False}, token=admin)
    assert again.data["deleteUser"] is True
    assert len(await events(bob_id, "ACCOUNT_DELETED")) == 1
    restored = await client.gql(RESTORE, {"t": await restore_token(client, "bob@example.com")})
    assert restored.data["restoreAccount"]["status"] == "OK"


async def test_admin_hard_delete_frees_the_email(client: GraphQLClient) -> None:
    """deleteUser(hard: true) purges the account now (also one already soft-deleted); the
    email can be registered again at once, and the audit keeps only the user id."""
    admin = await admin_token(client)
    bob = await client.register("bob@example.com")
    carol = await client.register("carol@example.com")
    await client.gql(DELETE_USER, {"id": carol["user"]["id"]}, token=admin)
    for victim in (bob, carol):
        user_id = victim["user"]["id"]
        result = await client.gql(DELETE_USER, {"id": user_id, "hard": True}, token=admin)
        assert result.data["deleteUser"] is True
        assert (await client.gql(ADMIN_USER, {"id": user_id}, token=admin)).data["user"] is None
        assert not await Session.filter(user_id=user_id).exists()
        hard = [e for e in await events(user_id, "ACCOUNT_DELETED") if e.detail["mode"] == "hard"]
        assert len(hard) == 1 and hard[0].ip_address is None
    again = await client.register("bob@example.com")
    assert again["user"]["id"] != bob["user"]["id"]


async def test_delete_user_is_for_admins(client: GraphQLClient) -> None:
    """Non-admins get FORBIDDEN and anonymous callers UNAUTHORIZED (nothing is deleted);
    an unknown or malformed id is NOT_FOUND."""
    admin = await admin_token(client)
    bob = await client.register("bob@example.com")
    target = {"id": bob["user"]["id"], "hard": True}
    assert (await client.gql(DELETE_USER, target, token=bob["accessToken"])).error_code == (
        "FORBIDDEN"
    )
    assert (await client.gql(DELETE_USER, target)).error_code == "UNAUTHORIZED"
    assert await client.me(bob["accessToken"]) is not None
    for missing in (str(uuid.uuid4()), "not-an-id"):
        result = await client.gql(DELETE_USER, {"id": missing}, token=admin)
        assert result.error_code == "NOT_FOUND"
