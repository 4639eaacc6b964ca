"""Talking to external identity providers: OpenID Connect (Google, any discovery URL) and
GitHub's plain OAuth 2.

Authorization URLs and the code-for-token exchange go through Authlib's httpx client
(PKCE with S256 only, client_secret_basic). For OIDC the id_token is verified here, not
trusted: signature against the provider's published JWKS (asymmetric algorithms only,
never ``none`` or HMAC), exact ``iss`` from the discovery document, ``aud`` (and ``azp``)
equal to our client id, ``exp``/``iat``, and the ``nonce`` bound to the flow. GitHub has
no id_token: the identity comes from its user and emails API, and an email counts as
verified only when GitHub says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx2
import jwt
from authlib.integrations.httpx_client import AsyncOAuth2Client

from authql.settings import OAuthProviderConfig

ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
METADATA_SECONDS = 3600
REFUSED_CODE_ERRORS = ("invalid_grant", "invalid_request", "bad_verification_code")


class ProviderUnavailable(Exception):
    """The provider could not be reached or answered nonsense (shown as PROVIDER_ERROR)."""


class IdentityRejected(Exception):
    """The provider's answer failed verification (bad id_token, nonce, audience, ...)."""


@dataclass(frozen=True)
class ExternalIdentity:
    """Who the provider says signed in. ``subject`` is the stable key; the email is a hint."""

    subject: str
    email: str | None
    email_verified: bool
    name: str | None


class OAuthClient:
    """One configured provider."""

    def __init__(self, config: OAuthProviderConfig, *, timeout: float = 10.0) -> None:
        self.config = config
        self.timeout = timeout
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def display_name(self) -> str:
        return self.config.display_name or self.config.name.replace("-", " ").title()

    def _client(self, redirect_uri: str | None = None) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method name
            code_challenge_method="S256",
            scope=" ".join(self.config.scopes),
            redirect_uri=redirect_uri,
            timeout=self.timeout,
        )

    async def metadata(self) -> dict[str, Any]:
        """The provider's endpoints: discovered (and cached for an hour) or configured."""
        config = self.config
        if config.kind != "oidc" or not config.discovery_url:
            return {
                "issuer": config.issuer,
                "authorization_endpoint": config.authorize_url,
                "token_endpoint": config.token_url,
                "userinfo_endpoint": config.userinfo_url,
                "jwks_uri": config.jwks_url,
            }
        if self._metadata is None or time.monotonic() - self._metadata_at > METADATA_SECONDS:
            document = await self._get_json(config.discovery_url)
            for key in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(document.get(key), str):
                    raise ProviderUnavailable(f"discovery document lacks {key}")
            self._metadata, self._metadata_at = document, time.monotonic()
            self._jwks = None
        return self._metadata

    async def _get_json(self, url: str, token: str | None = None) -> Any:
        # A plain client: Authlib's OAuth2 client insists on attaching an OAuth token.
        async with httpx2.AsyncClient(timeout=self.timeout) as client:
            headers = {"accept": "application/json"}
            if token:
                headers["authorization"] = f"Bearer {token}"
            try:
                response = await client.get(url, headers=headers)
                response.raise_for_status()
                return response.json()
            except Exception as exc:
                raise ProviderUnavailable(f"{type(exc).__name__} from {url}") from None

    async def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str
    ) -> str:
        """Where to send the browser: code flow, PKCE S256, our state and nonce."""
        endpoint = (await self.metadata())["authorization_endpoint"]
        extra = {"nonce": nonce} if self.config.kind == "oidc" else {}
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                endpoint, state=state, code_verifier=code_verifier, **extra
            )
        return str(url)

    async def identity(
        self, *, code: str, code_verifier: str, redirect_uri: str, nonce: str
    ) -> ExternalIdentity:
        """Exchange ``code`` (with its PKCE verifier) and return the verified identity."""
        metadata = await self.metadata()
        async with self._client(redirect_uri) as client:
            try:
                token = await client.fetch_token(
                    metadata["token_endpoint"],
                    code=code,
                    code_verifier=code_verifier,
                    headers={"accept": "application/json"},
                )
            except Exception as exc:
                # invalid_grant (RFC 6749), and GitHub's own name for a bad or used code.
                if any(word in str(exc) for word in REFUSED_CODE_ERRORS):
                    raise IdentityRejected("the provider refused the code") from None
                raise ProviderUnavailable(f"token exchange failed: {type(exc).__name__}") from None
        if self.config.kind == "github":
            return await self._github_identity(str(token.get("access_token", "")))
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise IdentityRejected("no id_token in the token response")
        claims = await self._verify_id_token(id_token, metadata, nonce)
        return ExternalIdentity(
            subject=str(claims["sub"]),
            email=claims.get("email") if isinstance(claims.get("email"), str) else None,
            email_verified=claims.get("email_verified") is True,
            name=claims.get("name") if isinstance(claims.get("name"), str) else None,
        )

    async def _signing_keys(self, metadata: dict[str, Any], *, refresh: bool) -> jwt.PyJWKSet:
        if self._jwks is None or refresh:
            self._jwks = await self._get_json(metadata["jwks_uri"])
        try:
            return jwt.PyJWKSet.from_dict(self._jwks)
        except jwt.PyJWTError:
            raise ProviderUnavailable("unusable JWKS") from None

    async def _verify_id_token(
        self, id_token: str, metadata: dict[str, Any], nonce: str
    ) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise IdentityRejected("malformed id_token") from None
        algorithm = header.get("alg")
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise IdentityRejected("id_token algorithm not allowed")
        key = None
        for refresh in (False, True):  # a key rotation shows up as an unknown kid
            keys = await self._signing_keys(metadata, refresh=refresh)
            key = next((k for k in keys.keys if header.get("kid") in (None, k.key_id)), None)
            if key is not None:
                break
        if key is None:
            raise IdentityRejected("id_token signed by an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key.key,
                algorithms=[algorithm],
                audience=self.config.client_id,
                issuer=metadata["issuer"],
                leeway=60,
                options={"require": ["iss", "aud", "sub", "exp", "iat"]},
            )
        except jwt.PyJWTError as exc:
            raise IdentityRejected(f"id_token invalid: {type(exc).__name__}") from None
        azp = claims.get("azp")
        if azp is not None and azp != self.config.client_id:
            raise IdentityRejected("id_token issued to another party")
        if not isinstance(claims.get("nonce"), str) or claims["nonce"] != nonce:
            raise IdentityRejected("id_token nonce does not match the flow")
        return claims

    async def _github_identity(self, access_token: str) -> ExternalIdentity:
        if not access_token:
            raise IdentityRejected("no access token in the token response")
        api = self.config.api_url.rstrip("/")
        user = await self._get_json(f"{api}/user", token=access_token)
        emails = await self._get_json(f"{api}/user/emails", token=access_token)
        if not isinstance(user, dict) or "id" not in user:
            raise ProviderUnavailable("GitHub user answer lacks an id")
        primary = (
            next(
                (
                    e
                    for e in emails
                    if isinstance(e, dict) and e.get("primary") and e.get("verified")
                ),
                None,
            )
            if isinstance(emails, list)
            else None
        )
        email = primary.get("email") if primary else None
        return ExternalIdentity(
            subject=str(user["id"]),
            email=email if isinstance(email, str) else None,
            email_verified=primary is not None,
            name=user.get("name") if isinstance(user.get("name"), str) else None,
        )


class OAuthProviders:
    """The configured providers by name, and where a browser starts each one's flow
    (``start_urls``: filled by the composition root from the mounted surfaces)."""

    def __init__(self, configs: tuple[OAuthProviderConfig, ...]) -> None:
        self._clients = {config.name: OAuthClient(config) for config in configs}
        self.start_urls: dict[str, str] = {}

    def get(self, name: str) -> OAuthClient | None:
        return self._clients.get(name)

    def all(self) -> list[OAuthClient]:
        return list(self._clients.values())
