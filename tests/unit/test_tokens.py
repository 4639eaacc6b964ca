"""Access JWTs (issue, verify, refuse every forgery) and opaque secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authql.services.tokens import (
    ACCESS_TOKEN_TYPE,
    AccessTokenService,
    TokenInvalid,
    digest,
    new_opaque_token,
    same_secret,
)

ISSUER = "https://auth.example.com"
AUDIENCE = "authql"
TTL = 900
NOW = 1_800_000_000.0
USER_ID = "0b9f5a34-7d1e-4c4e-9a51-3c1f2b0d6e7a"
SESSION_ID = "5d2c8e61-1f0a-4b7b-8c3d-9e4f5a6b7c8d"


def _pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    """The Ed25519 signing key of the service under test."""
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def service(ed_key: ed25519.Ed25519PrivateKey) -> AccessTokenService:
    """An EdDSA access-token service."""
    return AccessTokenService(_pem(ed_key), issuer=ISSUER, audience=AUDIENCE, ttl=TTL)


def _issue(service: AccessTokenService, roles: list[str] | None = None) -> str:
    return service.issue(user_id=USER_ID, session_id=SESSION_ID, roles=roles or ["user"], now=NOW)


def _claims(**overrides: Any) -> dict[str, Any]:
    """A complete, valid claim set (as the service would issue at NOW)."""
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": USER_ID,
        "sid": SESSION_ID,
        "roles": ["user"],
        "iat": int(NOW),
        "exp": int(NOW) + TTL,
        "jti": "f" * 32,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _sign_raw(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    """A compact JWS built by hand (so no library guard stands in the attacker's way)."""
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(claims, separators=(",", ":")).encode())
    )
    return signing_input + "." + _b64(sign(signing_input.encode()))


def _refused(service: AccessTokenService, token: str, now: float = NOW) -> bool:
    try:
        service.verify(token, now=now)
    except TokenInvalid:
        return True
    return False


# --- round trip -----------------------------------------------------------------------------


def test_issue_and_verify_round_trip(service: AccessTokenService) -> None:
    """A fresh token verifies and carries sub, sid, roles, iat, exp, iss, aud and jti."""
    token = _issue(service, ["admin", "user"])
    claims = service.verify(token, now=NOW + 1)
    assert claims["sub"] == USER_ID
    assert claims["sid"] == SESSION_ID
    assert claims["roles"] == ["admin", "user"]
    assert claims["iat"] == int(NOW)
    assert claims["exp"] == int(NOW) + TTL
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert re.fullmatch(r"[0-9a-f]{32}", claims["jti"])


def test_header_names_the_key_type_and_algorithm(service: AccessTokenService) -> None:
    """The header is alg EdDSA, typ at+jwt (RFC 9068) and the key's kid."""
    header = jwt.get_unverified_header(_issue(service))
    assert header == {"alg": "EdDSA", "typ": ACCESS_TOKEN_TYPE, "kid": service.kid}
    assert ACCESS_TOKEN_TYPE == "at+jwt"


def test_every_token_has_its_own_jti(service: AccessTokenService) -> None:
    """Two tokens for the same session at the same instant still differ (jti)."""
    first, second = _issue(service), _issue(service)
    assert first != second
    assert service.verify(first, now=NOW)["jti"] != service.verify(second, now=NOW)["jti"]


def test_third_parties_verify_with_the_published_jwks(service: AccessTokenService) -> None:
    """A resource server holding only the JWKS can verify a token (alg pinned, aud checked)."""
    token = _issue(service)
    public = jwt.PyJWK(service.jwks()["keys"][0])
    claims = jwt.decode(
        token,
        public,
        algorithms=["EdDSA"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["sid"] == SESSION_ID


# --- refusals -------------------------------------------------------------------------------


def test_refuses_an_expired_token(service: AccessTokenService) -> None:
    """A token is refused at and after its exp (judged by the injected now)."""
    token = _issue(service)
    assert not _refused(service, token, now=NOW + TTL - 1)
    token = _issue(service)  # a fresh token, not the cached one
    assert _refused(service, token, now=NOW + TTL)
    assert _refused(service, token, now=NOW + TTL + 3600)


def test_cached_verification_still_expires(service: AccessTokenService) -> None:
    """Once verified (and cached), the same token is refused after its exp."""
    token = _issue(service)
    assert service.verify(token, now=NOW)["sid"] == SESSION_ID
    with pytest.raises(TokenInvalid):
        service.verify(token, now=NOW + TTL + 1)
    with pytest.raises(TokenInvalid):
        service.verify(token, now=NOW + TTL + 2)


def test_refuses_another_audience(ed_key: ed25519.Ed25519PrivateKey) -> None:
    """A token minted for one audience is refused by a verifier for another (same key)."""
    issuer = AccessTokenService(_pem(ed_key), issuer=ISSUER, audience="billing", ttl=TTL)
    verifier = AccessTokenService(_pem(ed_key), issuer=ISSUER, audience=AUDIENCE, ttl=TTL)
    assert _refused(verifier, _issue(issuer))


def test_refuses_another_issuer(ed_key: ed25519.Ed25519PrivateKey) -> None:
    """A token minted under another issuer is refused (same key, same audience)."""
    issuer = AccessTokenService(
        _pem(ed_key), issuer="https://evil.test", audience=AUDIENCE, ttl=TTL
    )
    verifier = AccessTokenService(_pem(ed_key), issuer=ISSUER, audience=AUDIENCE, ttl=TTL)
    assert _refused(verifier, _issue(issuer))


def test_refuses_a_tampered_payload(service: AccessTokenService) -> None:
    """Changing the claims (say, adding a role) breaks the signature."""
    header, payload, signature = _issue(service).split(".")
    claims = json.loads(_unb64(payload))
    claims["roles"] = ["admin"]
    forged = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    assert _refused(service, forged)


def test_refuses_a_tampered_signature(service: AccessTokenService) -> None:
    """Flipping one bit of the signature is detected."""
    header, payload, signature = _issue(service).split(".")
    raw = bytearray(_unb64(signature))
    raw[10] ^= 0x01
    assert _refused(service, ".".join([header, payload, _b64(bytes(raw))]))


def test_refuses_a_truncated_or_garbled_token(service: AccessTokenService) -> None:
    """Malformed input is a TokenInvalid, never another exception."""
    token = _issue(service)
    for garbage in ["", "abc", token.rsplit(".", 1)[0], token + ".x", "a.b.c", "é.é.é"]:
        assert _refused(service, garbage), garbage


def test_refuses_alg_none(service: AccessTokenService) -> None:
    """An unsigned token (alg none) is refused even with the right kid and typ."""
    header = {"alg": "none", "typ": ACCESS_TOKEN_TYPE, "kid": service.kid}
    unsigned = _sign_raw(header, _claims(), lambda _: b"")
    assert unsigned.endswith(".")
    assert _refused(service, unsigned)
    for alg in ("None", "NONE"):
        assert _refused(service, _sign_raw({**header, "alg": alg}, _claims(), lambda _: b""))


def _public_key_forms(service: AccessTokenService, key: ed25519.Ed25519PrivateKey) -> list[bytes]:
    public = key.public_key()
    return [
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
        json.dumps(service.jwks()["keys"][0]).encode(),
    ]


def test_refuses_hs256_signed_with_the_public_key(
    service: AccessTokenService, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    """Key confusion: an HMAC token keyed with any public form of our key is refused."""
    for secret in _public_key_forms(service, ed_key):
        for alg, hash_name in (("HS256", "sha256"), ("HS512", "sha512")):
            header = {"alg": alg, "typ": ACCESS_TOKEN_TYPE, "kid": service.kid}
            forged = _sign_raw(
                header, _claims(), lambda data, s=secret, h=hash_name: hmac.new(s, data, h).digest()
            )
            assert _refused(service, forged), (alg, secret[:20])


def test_refuses_a_token_signed_by_another_key(service: AccessTokenService) -> None:
    """A token from another Ed25519 key is refused, even when it claims our kid."""
    other = ed25519.Ed25519PrivateKey.generate()
    stranger = AccessTokenService(_pem(other), issuer=ISSUER, audience=AUDIENCE, ttl=TTL)
    assert _refused(service, _issue(stranger))
    forged = jwt.encode(
        _claims(), other, algorithm="EdDSA", headers={"kid": service.kid, "typ": ACCESS_TOKEN_TYPE}
    )
    assert _refused(service, forged)


def test_refuses_a_token_with_a_foreign_kid(
    service: AccessTokenService, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    """A correctly signed token whose header names another key id is refused."""
    token = jwt.encode(
        _claims(), ed_key, algorithm="EdDSA", headers={"kid": "other", "typ": ACCESS_TOKEN_TYPE}
    )
    assert _refused(service, token)


@pytest.mark.parametrize("typ", ["challenge+jwt", "JWT", "reset+jwt", None])
def test_refuses_tokens_of_another_type(
    service: AccessTokenService, ed_key: ed25519.Ed25519PrivateKey, typ: str | None
) -> None:
    """A token signed with our key but of another type (a 2FA challenge, say) is no access token."""
    headers: dict[str, Any] = {"kid": service.kid}
    if typ is not None:
        headers["typ"] = typ
    token = jwt.encode(_claims(), ed_key, algorithm="EdDSA", headers=headers)
    if typ is None:
        # PyJWT adds typ "JWT" by default; strip it to test a header with no typ at all.
        header, payload, _ = token.split(".")
        bare = {k: v for k, v in json.loads(_unb64(header)).items() if k != "typ"}
        signing_input = _b64(json.dumps(bare).encode()) + "." + payload
        token = signing_input + "." + _b64(ed_key.sign(signing_input.encode()))
        assert "typ" not in jwt.get_unverified_header(token)
    assert _refused(service, token)


@pytest.mark.parametrize("missing", ["sid", "sub", "exp", "iat", "iss", "aud"])
def test_refuses_a_token_missing_a_required_claim(
    service: AccessTokenService, ed_key: ed25519.Ed25519PrivateKey, missing: str
) -> None:
    """Every required claim must be present (a token without sid belongs to no session)."""
    token = jwt.encode(
        _claims(**{missing: None}),
        ed_key,
        algorithm="EdDSA",
        headers={"kid": service.kid, "typ": ACCESS_TOKEN_TYPE},
    )
    assert _refused(service, token)


def test_refuses_an_oversized_token(
    service: AccessTokenService, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    """A genuinely signed but huge token (> 4 KiB) is refused before any parsing."""
    headers = {"kid": service.kid, "typ": ACCESS_TOKEN_TYPE}
    small = jwt.encode(_claims(), ed_key, algorithm="EdDSA", headers=headers)
    assert not _refused(service, small)
    huge = jwt.encode(
        _claims(roles=[f"role-{i}" for i in range(600)]), ed_key, algorithm="EdDSA", headers=headers
    )
    assert len(huge) > 4096
    assert _refused(service, huge)


# --- keys -----------------------------------------------------------------------------------


def test_es256_with_a_p256_key() -> None:
    """A P-256 private key signs ES256 tokens that round-trip, with an EC JWKS entry."""
    key = ec.generate_private_key(ec.SECP256R1())
    service = AccessTokenService(_pem(key), issuer=ISSUER, audience=AUDIENCE, ttl=TTL)
    assert service.algorithm == "ES256"
    token = _issue(service)
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert service.verify(token, now=NOW)["sub"] == USER_ID
    (jwk,) = service.jwks()["keys"]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and "d" not in jwk
    numbers = key.public_key().public_numbers()
    expected = {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64(numbers.x.to_bytes(32, "big")),
        "y": _b64(numbers.y.to_bytes(32, "big")),
    }
    canonical = json.dumps(expected, sort_keys=True, separators=(",", ":")).encode()
    assert jwk["kid"] == service.kid == _b64(hashlib.sha256(canonical).digest())


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        lambda: ec.generate_private_key(ec.SECP384R1()),
    ],
    ids=["rsa", "p384"],
)
def test_other_key_types_are_refused_at_construction(make_key: Any) -> None:
    """Only Ed25519 and P-256 keys are accepted; anything else fails at start-up."""
    with pytest.raises(ValueError, match="AUTHQL_JWT_PRIVATE_KEY"):
        AccessTokenService(_pem(make_key()), issuer=ISSUER, audience=AUDIENCE, ttl=TTL)


def test_jwks_is_public_only_and_kid_is_the_rfc7638_thumbprint(
    service: AccessTokenService, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    """The JWKS holds one public OKP key (no 'd'), whose kid is its RFC 7638 thumbprint."""
    (jwk,) = service.jwks()["keys"]
    assert "d" not in jwk
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    assert jwk["alg"] == "EdDSA" and jwk["use"] == "sig"
    raw_public = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert jwk["x"] == _b64(raw_public)
    # RFC 7638 section 3: the required members, lexicographic order, no whitespace.
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + _b64(raw_public) + '"}'
    assert jwk["kid"] == service.kid == _b64(hashlib.sha256(canonical.encode()).digest())


def test_jwks_cannot_be_mutated_through_its_result(service: AccessTokenService) -> None:
    """Callers get a copy: editing the returned key does not change what is served."""
    service.jwks()["keys"][0]["kid"] = "changed"
    assert service.jwks()["keys"][0]["kid"] == service.kid


# --- opaque secrets -------------------------------------------------------------------------


def test_digest_is_hex_sha256() -> None:
    """The stored form of an opaque token is its lowercase hex SHA-256."""
    token = new_opaque_token()
    assert digest(token) == hashlib.sha256(token.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest(token))
    assert digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_opaque_tokens_carry_at_least_256_bits() -> None:
    """Opaque tokens are URL-safe, decode to >= 32 random bytes and never repeat."""
    draws = [new_opaque_token() for _ in range(1000)]
    assert len(set(draws)) == len(draws)
    for token in draws:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
        assert len(token) >= 43  # 256 bits in base64url
        assert len(_unb64(token)) >= 32
    # Every alphabet position gets used: the bytes are not from a tiny range.
    assert len(set("".join(draws))) == 64


def test_same_secret_compares_exactly() -> None:
    """same_secret is true only for identical strings."""
    token = new_opaque_token()
    assert same_secret(token, str(token))
    assert not same_secret(token, token[:-1])
    assert not same_secret(token, token + "x")
    assert not same_secret(token, token.upper() if token != token.upper() else token.lower())
    assert same_secret("", "")
    assert same_secret("päss", "päss")
