"""Access tokens (asymmetric JWTs published as a JWKS) and opaque one-time secrets.

Access tokens are signed with one configured private key (Ed25519 -> EdDSA, or P-256 ->
ES256); the verifier accepts exactly that algorithm, requires ``exp``/``iat``/``iss``/
``aud``/``sub``/``sid`` and the ``at+jwt`` type, so no other token type (challenge,
reset, ...) can ever pass as an access token. Verified tokens are cached until they expire:
signature checks are the most expensive step of an authenticated request.

Opaque tokens (refresh, one-time) are 256-bit random strings stored only as SHA-256
digests: the database never holds a usable secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import OrderedDict
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

ACCESS_TOKEN_TYPE = "at+jwt"
#: Seconds a token's iat/nbf may lie ahead of our clock (other issuers' clocks drift).
CLOCK_SKEW = 60


class TokenInvalid(Exception):
    """The token failed verification (any reason; the reason is never shown to callers)."""


def new_opaque_token() -> str:
    """A fresh 256-bit URL-safe secret."""
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """The stored form of an opaque token (hex SHA-256)."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_secret(left: str, right: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(left.encode(), right.encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class AccessTokenService:
    """Issues and verifies access JWTs with one asymmetric key; serves its JWKS."""

    def __init__(
        self,
        private_key_pem: str,
        *,
        issuer: str,
        audience: str,
        ttl: int,
        cache_size: int = 50_000,
    ) -> None:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            self.algorithm = "EdDSA"
        elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
            self.algorithm = "ES256"
        else:
            raise ValueError("AUTHQL_JWT_PRIVATE_KEY must be an Ed25519 or P-256 private key")
        self._private_key = key
        self._public_key = key.public_key()
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self._public_jwk = self._make_public_jwk()
        self.kid = self._thumbprint(self._public_jwk)
        self._public_jwk["kid"] = self.kid
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size

    def _make_public_jwk(self) -> dict[str, str]:
        jwk = json.loads(
            jwt.algorithms.get_default_algorithms()[self.algorithm].to_jwk(self._public_key)
        )
        jwk["use"] = "sig"
        jwk["alg"] = self.algorithm
        return jwk

    @staticmethod
    def _thumbprint(jwk: dict[str, str]) -> str:
        """RFC 7638 key id: SHA-256 over the required members in lexicographic order."""
        required = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y")}[jwk["kty"]]
        canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"))
        return _b64(hashlib.sha256(canonical.encode()).digest())

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public key set other services use to verify tokens locally."""
        return {"keys": [dict(self._public_jwk)]}

    def issue(
        self,
        *,
        user_id: str,
        session_id: str,
        roles: list[str],
        now: float,
        ttl: int | None = None,
    ) -> str:
        """A signed access token for ``session_id``, valid for ``ttl`` seconds from ``now``.

        A longer ``ttl`` is for surfaces whose cookie is the only credential (Browsary):
        still safe, since every request also checks that the session is live.
        """
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "sid": session_id,
            "roles": roles,
            "iat": int(now),
            "exp": int(now) + (self.ttl if ttl is None else ttl),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            claims,
            self._private_key,
            algorithm=self.algorithm,
            headers={"kid": self.kid, "typ": ACCESS_TOKEN_TYPE},
        )

    def verify(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        """The verified claims of ``token``; raises TokenInvalid for any defect."""
        now = time.time() if now is None else now
        cached = self._cache.get(token)
        if cached is not None:
            if cached["exp"] > now:
                return cached
            self._cache.pop(token, None)
            raise TokenInvalid("expired")
        claims = self._decode(token, now)
        self._cache[token] = claims
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return claims

    def _decode(self, token: str, now: float) -> dict[str, Any]:
        if len(token) > 4096:
            raise TokenInvalid("oversized")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != ACCESS_TOKEN_TYPE or header.get("kid") != self.kid:
                raise TokenInvalid("wrong type or key")
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public_key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": ["exp", "iat", "iss", "aud", "sub", "sid"],
                    # Time claims are checked below against the injected clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise TokenInvalid(type(exc).__name__) from None
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            raise TokenInvalid("expired")
        if not isinstance(claims.get("iat"), int) or claims["iat"] > now + CLOCK_SKEW:
            raise TokenInvalid("issued in the future")
        if "nbf" in claims and (
            not isinstance(claims["nbf"], int) or claims["nbf"] > now + CLOCK_SKEW
        ):
            raise TokenInvalid("not yet valid")
        return claims
