"""Mail flows over GraphQL against a real SMTP server: password reset, email verification,
email change and magic links, their templates, and every way to misuse them.

The app under test builds its own SmtpMailer from ``smtp_url`` and ``mail_from`` (as in
production) and delivers to aiosmtpd on 127.0.0.1; the links the tests follow are read from
the mail that arrived there.
"""

from __future__ import annotations

import ipaddress
import itertools
import secrets
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest

from authql.models import OneTimeToken, Session, User
from authql.services.clock import FrozenClock
from authql.services.mail import MailMessage
from tests.smtp import (
    SmtpServer,
    extract_link,
    extract_token,
    html_of,
    smtp_server,
    text_of,
)
from tests.support import PASSWORD, REFRESH, GraphQLClient, GraphQLResult

MakeClient = Callable[..., GraphQLClient]
Connect = Callable[..., GraphQLClient]

ADA = "ada@example.com"
BOB = "bob@example.com"
NEW_EMAIL = "ada.new@example.org"
NEW_PASSWORD = "a brand new passphrase"
PRODUCT = "Acme ID"
MAIL_FROM = "Acme ID <auth@acme.example>"
APP = "https://app.example.com"
PARTNER = "https://partner.example.org/welcome"
PROXIES = (ipaddress.ip_network("203.0.113.0/24"),)  # the test transport's peer is 203.0.113.7

REQUEST_RESET = (
    "mutation($e: String!, $r: String) { requestPasswordReset(email: $e, returnUrl: $r) }"
)
RESET = """
mutation($t: String!, $p: String!) {
  resetPassword(token: $t, password: $p) {
    status accessToken refreshToken user { id email emailVerified } session { id method }
  }
}
"""
SEND_VERIFICATION = "mutation($r: String) { sendVerificationEmail(returnUrl: $r) }"
VERIFY_EMAIL = """
mutation($t: String!) {
  verifyEmail(token: $t) {
    status accessToken refreshToken user { id email emailVerified } session { id method }
  }
}
"""
REQUEST_EMAIL_CHANGE = """
mutation($e: String!, $p: String) { requestEmailChange(newEmail: $e, password: $p) }
"""
CONFIRM_EMAIL_CHANGE = """
mutation($t: String!) { confirmEmailChange(token: $t) { id email emailVerified } }
"""
SEND_MAGIC_LINK = "mutation($e: String!, $r: String) { sendMagicLink(email: $e, returnUrl: $r) }"
VERIFY_MAGIC_LINK = """
mutation($t: String!) {
  verifyMagicLink(token: $t) {
    status accessToken refreshToken user { id email emailVerified } session { id method }
  }
}
"""
ME = "query { me { id email emailVerified } }"

LINK_FLOWS = ("reset", "verify", "email_change", "magic_link")
TTL_SETTINGS = {
    "reset": "password_reset_ttl",
    "verify": "email_verification_ttl",
    "email_change": "email_change_ttl",
    "magic_link": "magic_link_ttl",
}


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    """A real SMTP server on 127.0.0.1 (set up before, torn down after, the apps)."""
    async with smtp_server() as server:
        yield server


@pytest.fixture
def connect(smtp: SmtpServer, make_client: MakeClient) -> Connect:
    """Clients for apps that send real mail to ``smtp`` (settings overridable)."""

    def make(**settings: Any) -> GraphQLClient:
        options: dict[str, Any] = {
            "mailer": None,  # the app builds its own SmtpMailer from smtp_url
            "smtp_url": smtp.url(),
            "smtp_timeout": 5.0,
            "product_name": PRODUCT,
            "mail_from": MAIL_FROM,
            **settings,
        }
        return make_client(**options)

    return make


@pytest.fixture
def client(connect: Connect) -> GraphQLClient:
    """A client whose app mails through the real SMTP server."""
    return connect()


async def mails_to(client: GraphQLClient, smtp: SmtpServer, address: str) -> list[EmailMessage]:
    """Every mail delivered so far whose envelope names ``address``."""
    await client.delivered()
    return smtp.to(address)


async def last_mail_to(client: GraphQLClient, smtp: SmtpServer, address: str) -> EmailMessage:
    mails = await mails_to(client, smtp, address)
    assert mails, f"no mail to {address}"
    return mails[-1]


def assert_well_formed(
    message: EmailMessage, *, to: str, minutes: int | None = None, link: bool = True
) -> None:
    """Both parts, the recipient, From = mail_from, the product name, the lifetime and the
    link (in both parts)."""
    assert message.is_multipart()
    plain, rich = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and rich is not None
    assert plain.get_content_type() == "text/plain"
    assert rich.get_content_type() == "text/html"
    assert message["To"] == to
    assert message["From"] == MAIL_FROM
    assert PRODUCT in message["Subject"]
    text, html = text_of(message), html_of(message)
    assert PRODUCT in text and PRODUCT in html
    if minutes is not None:
        assert f"{minutes} minutes" in text and f"{minutes} minutes" in html
    if link:
        assert extract_link(message) in html
    else:
        assert "token=" not in text and "token=" not in html


async def register(client: GraphQLClient, email: str = ADA, **fields: Any) -> dict[str, Any]:
    payload = await client.register(email, **fields)
    assert payload["status"] == "OK"
    return payload


async def snapshot() -> list[Any]:
    """Everything a refused link must leave untouched: accounts, sessions, one-time tokens."""
    users = (
        await User.all()
        .order_by("email")
        .values("id", "email", "email_verified", "password_hash", "phone", "phone_verified")
    )
    sessions = await Session.all().order_by("id").values("id", "revoked_at")
    tokens = await OneTimeToken.all().order_by("id").values("id", "used_at", "attempts")
    return [users, sessions, tokens]


async def live_sessions(email: str = ADA) -> int:
    user = await User.get(email=email)
    return await Session.filter(user_id=user.id, revoked_at=None).count()


async def issue(kind: str, client: GraphQLClient, smtp: SmtpServer, access: str) -> str:
    """Start flow ``kind`` for Ada (signed in with ``access`` where the flow needs it) and
    return the token of the link that was mailed."""
    before = len(smtp.messages)
    if kind == "reset":
        result = await client.gql(REQUEST_RESET, {"e": ADA})
    elif kind == "verify":
        result = await client.gql(SEND_VERIFICATION, token=access)
    elif kind == "email_change":
        result = await client.gql(
            REQUEST_EMAIL_CHANGE, {"e": NEW_EMAIL, "p": PASSWORD}, token=access
        )
    else:
        result = await client.gql(SEND_MAGIC_LINK, {"e": ADA})
    assert next(iter(result.data.values())) is True
    await client.delivered()
    linked = [message for message in smtp.messages[before:] if "token=" in text_of(message)]
    assert len(linked) == 1, [message["Subject"] for message in smtp.messages[before:]]
    return extract_token(linked[0])


async def use(
    kind: str, client: GraphQLClient, secret: str, *, access: str | None = None
) -> GraphQLResult:
    """Follow a link of flow ``kind`` carrying ``secret`` (signed in with ``access``)."""
    if kind == "reset":
        return await client.gql(RESET, {"t": secret, "p": NEW_PASSWORD}, token=access)
    if kind == "verify":
        return await client.gql(VERIFY_EMAIL, {"t": secret}, token=access)
    if kind == "email_change":
        return await client.gql(CONFIRM_EMAIL_CHANGE, {"t": secret}, token=access)
    return await client.gql(VERIFY_MAGIC_LINK, {"t": secret}, token=access)


def assert_used(kind: str, result: GraphQLResult) -> None:
    """The link did its job."""
    if kind == "email_change":
        assert result.data["confirmEmailChange"]["email"] == NEW_EMAIL
        return
    payload = next(iter(result.data.values()))
    assert payload["status"] == "OK" and payload["accessToken"]


def assert_invalid_token(result: GraphQLResult) -> None:
    assert result.error_code == "INVALID_TOKEN", result.body
    assert result.body["data"] is None


# --- the mail arrives and its link completes the flow ----------------------------------------


async def test_reset_mail_arrives_and_its_link_resets_the_password(
    client: GraphQLClient, smtp: SmtpServer
) -> None:
    """The reset mail reaches the stored address with both parts; its link sets the new
    password, the old one stops working and every earlier session ends."""
    first = await register(client)
    second = (await client.login()).data["login"]
    result = await client.gql(REQUEST_RESET, {"e": ADA})
    assert result.data == {"requestPasswordReset": True}
    message = await last_mail_to(client, smtp, ADA)
    assert_well_formed(message, to=ADA, minutes=60)
    assert smtp.envelopes[-1].mail_from == "auth@acme.example"

    reset = await use("reset", client, extract_token(message))
    payload = reset.data["resetPassword"]
    assert payload["status"] == "OK" and payload["user"]["email"] == ADA
    assert payload["user"]["emailVerified"] is True  # the link was read in the mailbox
    assert payload["session"]["method"] == "password_reset"
    assert await client.me(payload["accessToken"]) is not None
    for old in (first, second):
        assert await client.me(old["accessToken"]) is None
        assert (await client.gql(REFRESH, {"token": old["refreshToken"]})).errors
    assert (await client.login(ADA, PASSWORD)).error_code == "INVALID_CREDENTIALS"
    assert (await client.login(ADA, NEW_PASSWORD)).data["login"]["status"] == "OK"


async def test_verification_mail_arrives_and_its_link_verifies(
    client: GraphQLClient, smtp: SmtpServer
) -> None:
    """sendVerificationEmail mails a link (24 h = 1440 minutes) whose use marks the address
    verified and signs in."""
    access = (await register(client))["accessToken"]
    assert (await client.gql(ME, token=access)).data["me"]["emailVerified"] is False
    assert (await client.gql(SEND_VERIFICATION, token=access)).data == {
        "sendVerificationEmail": True
    }
    message = await last_mail_to(client, smtp, ADA)
    assert_well_formed(message, to=ADA, minutes=1440)

    payload = (await use("verify", client, extract_token(message))).data["verifyEmail"]
    assert payload["status"] == "OK"
    assert payload["user"] == {"id": payload["user"]["id"], "email": ADA, "emailVerified": True}
    assert payload["session"]["method"] == "email_verification"
    assert (await client.gql(ME, token=payload["accessToken"])).data["me"]["emailVerified"]
    assert (await client.gql(ME, token=access)).data["me"]["emailVerified"] is True
    again = await client.gql(SEND_VERIFICATION, token=access)
    assert again.error_code == "VALIDATION_ERROR"


async def test_email_change_confirms_at_the_new_address_and_tells_the_old(
    client: GraphQLClient, smtp: SmtpServer
) -> None:
    """The confirmation link goes to the new address, a notice (without a link) to the old;
    confirming moves the account, marks it verified, keeps every session and tells the old
    address again."""
    first = await register(client)
    second = (await client.login()).data["login"]
    result = await client.gql(
        REQUEST_EMAIL_CHANGE,
        {"e": "Ada.New@Example.org", "p": PASSWORD},
        token=first["accessToken"],
    )
    assert result.data == {"requestEmailChange": True}
    confirmation = await last_mail_to(client, smtp, NEW_EMAIL)
    assert_well_formed(confirmation, to=NEW_EMAIL, minutes=60)
    assert NEW_EMAIL in text_of(confirmation)
    [notice] = await mails_to(client, smtp, ADA)
    assert_well_formed(notice, to=ADA, link=False)
    assert NEW_EMAIL in text_of(notice)
    # Nothing moves before the new address confirms.
    assert (await client.gql(ME, token=first["accessToken"])).data["me"]["email"] == ADA

    confirmed = (await use("email_change", client, extract_token(confirmation))).data
    assert confirmed["confirmEmailChange"]["email"] == NEW_EMAIL
    assert confirmed["confirmEmailChange"]["emailVerified"] is True
    for session in (first, second):
        me = (await client.gql(ME, token=session["accessToken"])).data["me"]
        assert me["email"] == NEW_EMAIL and me["emailVerified"] is True
    refreshed = await client.gql(REFRESH, {"token": second["refreshToken"]})
    assert refreshed.data["refresh"]["status"] == "OK"
    assert await live_sessions(NEW_EMAIL) == 2
    changed = await mails_to(client, smtp, ADA)
    assert len(changed) == 2
    assert_well_formed(changed[-1], to=ADA, link=False)
    assert NEW_EMAIL in text_of(changed[-1])
    assert (await client.login(ADA)).error_code == "INVALID_CREDENTIALS"
    assert (await client.login(NEW_EMAIL)).data["login"]["status"] == "OK"


async def test_magic_link_mail_signs_in_and_verifies_the_address(
    client: GraphQLClient, smtp: SmtpServer
) -> None:
    """sendMagicLink mails a 15-minute link; following it starts a magic-link session and
    marks the (so far unverified) address verified."""
    await register(client)
    assert (await client.gql(SEND_MAGIC_LINK, {"e": ADA})).data == {"sendMagicLink": True}
    message = await last_mail_to(client, smtp, ADA)
    assert_well_formed(message, to=ADA, minutes=15)

    payload = (await use("magic_link", client, extract_token(message))).data["verifyMagicLink"]
    assert payload["status"] == "OK"
    assert payload["user"]["emailVerified"] is True
    assert payload["session"]["method"] == "magic_link"
    assert (await client.gql(ME, token=payload["accessToken"])).data["me"]["email"] == ADA
    assert await live_sessions() == 2


async def test_smtp_credentials_come_from_the_url(make_client: MakeClient) -> None:
    """With AUTHQL_SMTP_URL carrying (URL-encoded) credentials the mailer authenticates and
    the mail is accepted by a server that requires AUTH."""
    async with smtp_server(username="mailer@acme.example", password="p@ss:w/rd") as smtp:
        assert "p%40ss%3Aw%2Frd" in smtp.url()
        client = make_client(mailer=None, smtp_url=smtp.url(), mail_from=MAIL_FROM)
        await register(client)
        await client.gql(REQUEST_RESET, {"e": ADA})
        await client.delivered()
        [message] = smtp.to(ADA)
        assert extract_token(message)
        assert smtp.logins == [("mailer@acme.example", True)]


async def test_smtp_requiring_auth_refuses_a_mailer_without_credentials(
    make_client: MakeClient,
) -> None:
    """The AUTH-requiring test server really refuses unauthenticated mail (so the test
    above proves the credentials were used)."""
    async with smtp_server(username="mailer@acme.example", password="secret") as smtp:
        mailer = smtp.mailer(username="")
        message = MailMessage(to=ADA, subject="s", text="t", html="<p>h</p>")
        with pytest.raises(aiosmtplib.SMTPSenderRefused, match="530"):
            await mailer.send(message)
        assert smtp.messages == []


# --- templates -------------------------------------------------------------------------------


async def test_operator_templates_override_one_template(
    connect: Connect, smtp: SmtpServer, tmp_path: Path
) -> None:
    """Files in templates_dir replace the subject, text and HTML of that template only;
    values are filled in and the link in the custom text still completes the flow."""
    (tmp_path / "password_reset.subject.txt").write_text("[$product] choose a new password\n")
    (tmp_path / "password_reset.txt").write_text("Hello $email_hint\nGo: $link\n($minutes min)")
    (tmp_path / "password_reset.html").write_text(
        '<h1>$product</h1><a href="$link">Reset</a> within $minutes min'
    )
    client = connect(templates_dir=tmp_path)
    await register(client)
    await client.gql(REQUEST_RESET, {"e": ADA})
    message = await last_mail_to(client, smtp, ADA)
    assert message["Subject"] == f"[{PRODUCT}] choose a new password"
    text, html = text_of(message), html_of(message)
    assert text.startswith("Hello $email_hint\nGo: http")  # unknown names stay as written
    assert "(60 min)" in text
    link = extract_link(message)
    assert html.strip() == f'<h1>{PRODUCT}</h1><a href="{link}">Reset</a> within 60 min'
    assert (await use("reset", client, extract_token(message))).data["resetPassword"]

    # Other templates keep their defaults.
    await client.gql(SEND_MAGIC_LINK, {"e": ADA})
    magic = await last_mail_to(client, smtp, ADA)
    assert magic["Subject"] == f"Sign in to {PRODUCT}"
    assert_well_formed(magic, to=ADA, minutes=15)


async def test_missing_template_parts_fall_back(
    connect: Connect, smtp: SmtpServer, tmp_path: Path
) -> None:
    """A folder with only some parts: the subject falls back to the default, and without an
    HTML file the HTML part is built from the (overridden) text, link included."""
    (tmp_path / "magic_link.txt").write_text("One click for $product:\n\n$link\n\nBye.")
    (tmp_path / "verify_email.subject.txt").write_text("Please confirm ($product)")
    client = connect(templates_dir=tmp_path)
    access = (await register(client))["accessToken"]

    await client.gql(SEND_MAGIC_LINK, {"e": ADA})
    magic = await last_mail_to(client, smtp, ADA)
    assert magic["Subject"] == f"Sign in to {PRODUCT}"
    assert text_of(magic).startswith(f"One click for {PRODUCT}:")
    link = extract_link(magic)
    html = html_of(magic)
    assert f"One click for {PRODUCT}:" in html and f'<a href="{link}">' in html
    assert "Bye." in html

    await client.gql(SEND_VERIFICATION, token=access)
    verify = await last_mail_to(client, smtp, ADA)
    assert verify["Subject"] == f"Please confirm ({PRODUCT})"
    assert_well_formed(verify, to=ADA, minutes=1440)
    assert "Confirm your email address" in text_of(verify)


async def test_values_are_escaped_in_the_html_part(make_client: MakeClient) -> None:
    """An address carrying markup shows as text in the HTML part (never as a tag) and
    verbatim in the text part."""
    evil = "<script>alert(1)</script>@example.com"
    client = make_client(product_name="Acme & <Co>")
    access = (await register(client))["accessToken"]
    result = await client.gql(REQUEST_EMAIL_CHANGE, {"e": evil, "p": PASSWORD}, token=access)
    assert result.data == {"requestEmailChange": True}
    mails, _ = await client.delivered()
    assert {mail.to for mail in mails} == {evil, ADA}
    for mail in mails:
        assert "<script>" not in mail.html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;@example.com" in mail.html
        assert "Acme &amp; &lt;Co&gt;" in mail.html and "<Co>" not in mail.html
        assert evil in mail.text and "Acme & <Co>" in mail.text


# --- misuse of every link --------------------------------------------------------------------


@pytest.mark.parametrize("kind", LINK_FLOWS)
async def test_a_used_link_does_not_work_again(
    kind: str, client: GraphQLClient, smtp: SmtpServer
) -> None:
    """Every link is single use: the second use is INVALID_TOKEN and changes nothing."""
    access = (await register(client))["accessToken"]
    token = await issue(kind, client, smtp, access)
    assert_used(kind, await use(kind, client, token))
    before = await snapshot()
    assert_invalid_token(await use(kind, client, token))
    assert await snapshot() == before


@pytest.mark.parametrize("kind", LINK_FLOWS)
async def test_a_link_expires_after_its_lifetime(
    kind: str, client: GraphQLClient, smtp: SmtpServer, clock: FrozenClock
) -> None:
    """A link works until its lifetime ends and is INVALID_TOKEN (changing nothing) after."""
    ttl = getattr(client.services.settings, TTL_SETTINGS[kind])
    access = (await register(client))["accessToken"]
    token = await issue(kind, client, smtp, access)
    clock.advance(ttl + 1)
    before = await snapshot()
    assert_invalid_token(await use(kind, client, token))
    assert await snapshot() == before

    access = (await client.login()).data["login"]["accessToken"]
    fresh = await issue(kind, client, smtp, access)
    clock.advance(ttl - 1)
    assert_used(kind, await use(kind, client, fresh))


@pytest.mark.parametrize("kind", LINK_FLOWS)
async def test_garbage_tokens_are_refused(
    kind: str, client: GraphQLClient, smtp: SmtpServer
) -> None:
    """Empty, short, over-long, random and tampered tokens are INVALID_TOKEN; the real
    link still works afterwards."""
    access = (await register(client))["accessToken"]
    token = await issue(kind, client, smtp, access)
    before = await snapshot()
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for garbage in ("", "x", "a" * 300, secrets.token_urlsafe(32), tampered, token + "x"):
        assert_invalid_token(await use(kind, client, garbage))
    assert await snapshot() == before
    assert_used(kind, await use(kind, client, token))


@pytest.mark.parametrize(("issued", "used"), list(itertools.permutations(LINK_FLOWS, 2)))
async def test_a_link_for_another_purpose_is_refused(
    issued: str, used: str, client: GraphQLClient, smtp: SmtpServer
) -> None:
    """A token mailed for one flow is INVALID_TOKEN in every other flow, changes nothing
    there, and still works for its own purpose."""
    access = (await register(client))["accessToken"]
    token = await issue(issued, client, smtp, access)
    before = await snapshot()
    assert_invalid_token(await use(used, client, token))
    assert await snapshot() == before
    assert_used(issued, await use(issued, client, token))


@pytest.mark.parametrize("kind", LINK_FLOWS)
async def test_resending_invalidates_the_earlier_link(
    kind: str, client: GraphQLClient, smtp: SmtpServer
) -> None:
    """Asking again mails a new link and kills the earlier one."""
    access = (await register(client))["accessToken"]
    first = await issue(kind, client, smtp, access)
    second = await issue(kind, client, smtp, access)
    assert first != second
    assert_invalid_token(await use(kind, client, first))
    assert_used(kind, await use(kind, client, second))


async def test_a_link_acts_only_for_its_own_account(
    client: GraphQLClient, smtp: SmtpServer
) -> None:
    """Following Ada's link while signed in as Bob verifies or moves Ada's account, never
    Bob's; Bob's own link is still needed for Bob."""
    ada = await register(client)
    bob = await register(client, BOB)
    verify_token = await issue("verify", client, smtp, ada["accessToken"])
    change_token = await issue("email_change", client, smtp, ada["accessToken"])
    verified = await use("verify", client, verify_token, access=bob["accessToken"])
    assert verified.data["verifyEmail"]["user"]["email"] == ADA
    moved = await use("email_change", client, change_token, access=bob["accessToken"])
    assert moved.data["confirmEmailChange"]["id"] == ada["user"]["id"]
    bob_me = (await client.gql(ME, token=bob["accessToken"])).data["me"]
    assert bob_me == {"id": bob["user"]["id"], "email": BOB, "emailVerified": False}
    ada_me = (await client.gql(ME, token=ada["accessToken"])).data["me"]
    assert ada_me["email"] == NEW_EMAIL


async def test_a_weak_password_does_not_burn_the_reset_link(
    client: GraphQLClient, smtp: SmtpServer
) -> None:
    """resetPassword with a too-short password is a VALIDATION_ERROR on `password` that
    leaves the link usable and the old password in place."""
    access = (await register(client))["accessToken"]
    token = await issue("reset", client, smtp, access)
    before = await snapshot()
    weak = await client.gql(RESET, {"t": token, "p": "short"})
    assert weak.error_code == "VALIDATION_ERROR"
    assert set(weak.errors[0]["extensions"]["fields"]) == {"password"}
    assert await snapshot() == before
    assert (await client.login(ADA, PASSWORD)).data["login"]["status"] == "OK"
    assert_used("reset", await use("reset", client, token))


async def test_a_reset_link_survives_an_email_change(
    client: GraphQLClient, smtp: SmtpServer
) -> None:
    """A reset link mailed before the address changed still resets the account's password
    (it belongs to the account, not to the address)."""
    access = (await register(client))["accessToken"]
    reset_token = await issue("reset", client, smtp, access)
    change_token = await issue("email_change", client, smtp, access)
    assert_used("email_change", await use("email_change", client, change_token))
    payload = (await use("reset", client, reset_token)).data["resetPassword"]
    assert payload["status"] == "OK" and payload["user"]["email"] == NEW_EMAIL
    assert (await client.login(NEW_EMAIL, NEW_PASSWORD)).data["login"]["status"] == "OK"


async def test_a_verification_link_for_an_old_address_verifies_nothing(
    client: GraphQLClient, smtp: SmtpServer
) -> None:
    """A verification link proves only the address it was mailed to: once the account has
    another address the old link is INVALID_TOKEN and the new address stays unverified."""
    ada = await register(client)
    verify_token = await issue("verify", client, smtp, ada["accessToken"])
    change_token = await issue("email_change", client, smtp, ada["accessToken"])
    assert_used("email_change", await use("email_change", client, change_token))
    assert_invalid_token(await use("verify", client, verify_token))

    # The same holds for an address set outside the change flow (an operator's edit).
    access = (await client.login(NEW_EMAIL)).data["login"]["accessToken"]
    await User.filter(email=NEW_EMAIL).update(email_verified=False)
    token = await _verification_token(client, smtp, access, NEW_EMAIL)
    await User.filter(email=NEW_EMAIL).update(email="ada.third@example.net")
    assert_invalid_token(await use("verify", client, token))
    assert (await User.get(email="ada.third@example.net")).email_verified is False


async def _verification_token(
    client: GraphQLClient, smtp: SmtpServer, access: str, address: str
) -> str:
    assert (await client.gql(SEND_VERIFICATION, token=access)).data["sendVerificationEmail"]
    return extract_token(await last_mail_to(client, smtp, address))


# --- enumeration -----------------------------------------------------------------------------


async def _raw(client: GraphQLClient, query: str, variables: dict[str, Any]) -> httpx.Response:
    return await client.http.post("/graphql", json={"query": query, "variables": variables})


@pytest.mark.parametrize("document", [REQUEST_RESET, SEND_MAGIC_LINK], ids=["reset", "magic"])
async def test_known_and_unknown_addresses_get_identical_answers(
    document: str, client: GraphQLClient, smtp: SmtpServer
) -> None:
    """requestPasswordReset and sendMagicLink answer byte for byte the same for an existing
    and an unknown account; only the existing one gets mail."""
    await register(client)
    known = await _raw(client, document, {"e": ADA})
    unknown = await _raw(client, document, {"e": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert known.content == unknown.content
    assert known.headers.get("content-type") == unknown.headers.get("content-type")
    await client.delivered()
    assert [envelope.rcpt_tos for envelope in smtp.envelopes] == [[ADA]]


@pytest.mark.parametrize(
    ("document", "identifier"),
    [
        (REQUEST_RESET, "  ADA@Example.COM "),
        (REQUEST_RESET, "Ada_L"),
        (SEND_MAGIC_LINK, "ADA@EXAMPLE.COM"),
    ],
    ids=["reset-case", "reset-username", "magic-case"],
)
async def test_mail_goes_only_to_the_stored_address(
    document: str, identifier: str, client: GraphQLClient, smtp: SmtpServer
) -> None:
    """Whatever form of the identifier the caller typed, the link goes to the address
    stored on the account, and to no other."""
    await register(client, username="ada_l")
    assert (await client.gql(document, {"e": identifier})).errors == []
    await client.delivered()
    assert [envelope.rcpt_tos for envelope in smtp.envelopes] == [[ADA]]
    assert smtp.messages[0]["To"] == ADA


# --- open redirects --------------------------------------------------------------------------


REFUSED_URLS = [
    "https://evil.example.net/callback",
    "https://app.example.com.evil.net/",
    "https://app.example.com@evil.net/",
    "http://app.example.com/",  # another scheme is another origin
    "javascript:alert(1)//https://app.example.com",
    "//evil.example.net/",
    "https://partner.example.org/welcome/../steal",
    "not a url",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
@pytest.mark.parametrize("flow", ["reset", "verify", "magic_link"])
async def test_an_unlisted_return_url_is_refused_and_nothing_is_mailed(
    flow: str, url: str, connect: Connect, smtp: SmtpServer
) -> None:
    """A returnUrl outside allowed_redirects is a VALIDATION_ERROR on `returnUrl`; no link
    is mailed anywhere."""
    client = connect(allowed_redirects=(APP, PARTNER))
    access = (await register(client))["accessToken"]
    if flow == "reset":
        result = await client.gql(REQUEST_RESET, {"e": ADA, "r": url})
    elif flow == "verify":
        result = await client.gql(SEND_VERIFICATION, {"r": url}, token=access)
    else:
        result = await client.gql(SEND_MAGIC_LINK, {"e": ADA, "r": url})
    assert result.error_code == "VALIDATION_ERROR"
    assert set(result.errors[0]["extensions"]["fields"]) == {"returnUrl"}
    await client.delivered()
    assert smtp.messages == []
    assert await OneTimeToken.all().count() == 0


@pytest.mark.parametrize(
    "url",
    [f"{APP}/auth/finish?lang=en", f"{APP}/", PARTNER],
)
@pytest.mark.parametrize("flow", ["reset", "verify", "magic_link"])
async def test_an_allowed_return_url_is_the_link_base(
    flow: str, url: str, connect: Connect, smtp: SmtpServer
) -> None:
    """An allowed origin or exact URL becomes the start of the mailed link (with the token
    added as a parameter), and that link completes the flow."""
    client = connect(allowed_redirects=(APP, PARTNER))
    access = (await register(client))["accessToken"]
    if flow == "reset":
        result = await client.gql(REQUEST_RESET, {"e": ADA, "r": url})
    elif flow == "verify":
        result = await client.gql(SEND_VERIFICATION, {"r": url}, token=access)
    else:
        result = await client.gql(SEND_MAGIC_LINK, {"e": ADA, "r": url})
    assert result.errors == []
    message = await last_mail_to(client, smtp, ADA)
    link = extract_link(message)
    separator = "&" if "?" in url else "?"
    assert link.startswith(f"{url}{separator}token=")
    assert_used(flow, await use(flow, client, extract_token(message)))


async def test_without_a_return_url_links_open_the_public_url(
    connect: Connect, smtp: SmtpServer
) -> None:
    """With no returnUrl the link opens the flow's page on AUTHQL_PUBLIC_URL."""
    client = connect(public_url="https://auth.acme.example")
    await register(client)
    await client.gql(REQUEST_RESET, {"e": ADA})
    assert extract_link(await last_mail_to(client, smtp, ADA)).startswith(
        "https://auth.acme.example/reset-password?token="
    )


# --- rate limits -----------------------------------------------------------------------------


def _assert_rate_limited(result: GraphQLResult) -> None:
    assert result.error_code == "RATE_LIMITED", result.body
    assert result.errors[0]["extensions"]["retryAfter"] > 0


@pytest.mark.parametrize(
    ("document", "action"),
    [(REQUEST_RESET, "recovery"), (SEND_MAGIC_LINK, "magic_link")],
    ids=["reset", "magic"],
)
async def test_requests_are_limited_per_address(
    document: str, action: str, connect: Connect, smtp: SmtpServer, clock: FrozenClock
) -> None:
    """Past the budget for one address (in any case) the request is RATE_LIMITED and mails
    nothing; other addresses, and the same one after the window, are served."""
    client = connect(rate_limits={action: (2, 900)})
    await register(client)
    await register(client, BOB)
    for identifier in (ADA, "ADA@example.com"):
        assert (await client.gql(document, {"e": identifier})).errors == []
    _assert_rate_limited(await client.gql(document, {"e": " Ada@Example.com"}))
    assert (await client.gql(document, {"e": BOB})).errors == []
    # An unknown address is limited exactly like a real one.
    for _ in range(2):
        assert (await client.gql(document, {"e": "nobody@example.com"})).errors == []
    _assert_rate_limited(await client.gql(document, {"e": "nobody@example.com"}))
    await client.delivered()
    assert len(smtp.to(ADA)) == 2 and len(smtp.to(BOB)) == 1
    clock.advance(2 * 900)
    assert (await client.gql(document, {"e": ADA})).errors == []


@pytest.mark.parametrize(
    ("document", "action"),
    [(REQUEST_RESET, "recovery_ip"), (SEND_MAGIC_LINK, "magic_link_ip")],
    ids=["reset", "magic"],
)
async def test_requests_are_limited_per_ip(
    document: str, action: str, connect: Connect, smtp: SmtpServer
) -> None:
    """One client address cannot spray requests across many accounts; another address is
    still served."""
    client = connect(rate_limits={action: (2, 900)}, trusted_proxies=PROXIES)
    await register(client)
    here, there = {"x-forwarded-for": "198.51.100.1"}, {"x-forwarded-for": "198.51.100.2"}
    for email in ("one@example.com", "two@example.com"):
        assert (await client.gql(document, {"e": email}, headers=here)).errors == []
    _assert_rate_limited(await client.gql(document, {"e": ADA}, headers=here))
    assert (await client.gql(document, {"e": ADA}, headers=there)).errors == []
    await client.delivered()
    assert len(smtp.to(ADA)) == 1


# --- email change rules ----------------------------------------------------------------------


@pytest.mark.parametrize("password", [None, "wrong password!", ""])
async def test_email_change_needs_the_current_password(
    password: str | None, client: GraphQLClient, smtp: SmtpServer
) -> None:
    """A password account must re-enter its password: missing or wrong is
    INVALID_CREDENTIALS and nothing is mailed."""
    access = (await register(client))["accessToken"]
    result = await client.gql(REQUEST_EMAIL_CHANGE, {"e": NEW_EMAIL, "p": password}, token=access)
    assert result.error_code == "INVALID_CREDENTIALS"
    await client.delivered()
    assert smtp.messages == []
    assert await OneTimeToken.all().count() == 0


async def test_email_change_to_a_taken_address_conflicts(
    client: GraphQLClient, smtp: SmtpServer
) -> None:
    """Another account's address (in any case) is CONFLICT on `newEmail`; nothing mailed."""
    access = (await register(client))["accessToken"]
    await register(client, BOB)
    result = await client.gql(
        REQUEST_EMAIL_CHANGE, {"e": "BOB@Example.com", "p": PASSWORD}, token=access
    )
    assert result.error_code == "CONFLICT"
    assert set(result.errors[0]["extensions"]["fields"]) == {"newEmail"}
    await client.delivered()
    assert smtp.messages == []


async def test_email_change_to_the_same_address_is_invalid(
    client: GraphQLClient, smtp: SmtpServer
) -> None:
    """The current address (in any case) is a VALIDATION_ERROR; so is a malformed one."""
    access = (await register(client))["accessToken"]
    for address in ("Ada@Example.COM", "not-an-address"):
        result = await client.gql(REQUEST_EMAIL_CHANGE, {"e": address, "p": PASSWORD}, token=access)
        assert result.error_code == "VALIDATION_ERROR"
        assert set(result.errors[0]["extensions"]["fields"]) == {"newEmail"}
    await client.delivered()
    assert smtp.messages == []


async def test_email_change_needs_a_session(client: GraphQLClient, smtp: SmtpServer) -> None:
    """Without a signed-in caller requestEmailChange is UNAUTHORIZED."""
    await register(client)
    result = await client.gql(REQUEST_EMAIL_CHANGE, {"e": NEW_EMAIL, "p": PASSWORD})
    assert result.error_code == "UNAUTHORIZED"


async def test_an_address_taken_before_confirmation_conflicts(
    client: GraphQLClient, smtp: SmtpServer
) -> None:
    """If someone registers the new address before the link is used, confirming is a
    CONFLICT and the account keeps its address."""
    access = (await register(client))["accessToken"]
    token = await issue("email_change", client, smtp, access)
    await register(client, NEW_EMAIL)
    result = await use("email_change", client, token)
    assert result.error_code == "CONFLICT"
    assert (await client.gql(ME, token=access)).data["me"]["email"] == ADA


# --- required verification -------------------------------------------------------------------


async def test_registering_under_required_verification_mails_the_link(
    connect: Connect, smtp: SmtpServer
) -> None:
    """With require_email_verification, register answers EMAIL_NOT_VERIFIED without tokens
    and mails a verification link; login is refused until that link was followed."""
    client = connect(require_email_verification=True)
    registered = await client.register(ADA)
    assert registered["status"] == "EMAIL_NOT_VERIFIED" and registered["accessToken"] is None
    message = await last_mail_to(client, smtp, ADA)
    assert_well_formed(message, to=ADA, minutes=1440)
    assert (await client.login()).data["login"]["status"] == "EMAIL_NOT_VERIFIED"
    verified = (await use("verify", client, extract_token(message))).data["verifyEmail"]
    assert verified["status"] == "OK" and verified["user"]["emailVerified"] is True
    assert (await client.login()).data["login"]["status"] == "OK"


async def test_required_verification_blocks_login_until_the_link_is_used(
    connect: Connect, smtp: SmtpServer
) -> None:
    """With require_email_verification, login answers EMAIL_NOT_VERIFIED (no tokens) until
    the verification link was followed, then OK."""
    lenient = connect()
    ada = await register(lenient)  # signed up before the operator required verification
    strict = connect(require_email_verification=True)
    blocked = (await strict.login()).data["login"]
    assert blocked["status"] == "EMAIL_NOT_VERIFIED" and blocked["accessToken"] is None
    token = await _verification_token(strict, smtp, ada["accessToken"], ADA)
    assert (await strict.login()).data["login"]["status"] == "EMAIL_NOT_VERIFIED"
    verified = (await use("verify", strict, token)).data["verifyEmail"]
    assert verified["status"] == "OK" and verified["accessToken"]
    login = (await strict.login()).data["login"]
    assert login["status"] == "OK" and login["accessToken"]


async def test_under_required_verification_a_magic_link_verifies_and_signs_in(
    connect: Connect, smtp: SmtpServer
) -> None:
    """A magic link proves the mailbox: for a new, unverified account it marks the address
    verified and signs in even while verification is required; password login works
    after."""
    client = connect(require_email_verification=True)
    registered = await client.register(ADA)
    assert registered["status"] == "EMAIL_NOT_VERIFIED" and registered["accessToken"] is None
    assert (await client.gql(SEND_MAGIC_LINK, {"e": ADA})).data["sendMagicLink"] is True
    token = extract_token(await last_mail_to(client, smtp, ADA))
    payload = (await use("magic_link", client, token)).data["verifyMagicLink"]
    assert payload["status"] == "OK" and payload["accessToken"]
    assert payload["user"]["emailVerified"] is True
    assert (await client.login()).data["login"]["status"] == "OK"
