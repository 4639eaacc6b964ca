"""Configuration: one frozen Settings object, read once from the environment.

This is the only module that reads ``os.environ``. Everything else receives a Settings
instance from ``create_app`` (the composition root), so tests build apps with explicit
settings instead of patching the environment.

Secrets: in development a missing ``AUTHQL_SECRET_KEY`` or ``AUTHQL_JWT_PRIVATE_KEY`` is
generated once and persisted under the data folder (mode 0600) with a warning, so restarts
keep sessions valid. In production a missing secret is a start-up error: a server that
silently invents its signing key would invalidate every token on restart and hide a
misconfiguration.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

logger = logging.getLogger("authql.settings")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Per-action rate limits: (requests, window seconds). Keys are counted per client ip
#: (``*_ip``) or per account identifier; see services.ratelimit for where each is checked.
DEFAULT_RATE_LIMITS: dict[str, tuple[int, int]] = {
    "login": (10, 15 * 60),
    "login_ip": (50, 15 * 60),
    "register_ip": (10, 60 * 60),
    "refresh_ip": (120, 60),
    "change_password": (5, 15 * 60),
    "recovery": (5, 15 * 60),
    "recovery_ip": (20, 15 * 60),
    "magic_link": (5, 15 * 60),
    "magic_link_ip": (20, 15 * 60),
    "sms_send": (3, 15 * 60),
    "sms_send_ip": (10, 15 * 60),
    "verify_ip": (30, 15 * 60),
    "verification_send": (5, 60 * 60),
    "email_change": (5, 60 * 60),
    # REST dialects' documented limits, per client ip (see each dialect's docstring).
    "modularauth_login": (10, 15 * 60),
    "modularauth_register": (5, 60 * 60),
    "modularauth_recovery": (3, 15 * 60),
    "modularauth_change_password": (5, 15 * 60),
    "authcore_auth": (5, 15 * 60),
    "authcore_public": (20, 60),
}

_PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class OAuthProviderConfig:
    """One external identity provider (``AUTHQL_OAUTH_<NAME>_*``).

    OIDC providers need ``discovery_url`` (or ``issuer`` + explicit endpoints + ``jwks_url``);
    plain OAuth 2 providers (GitHub) need the authorize, token and user-info endpoints.
    """

    name: str
    client_id: str
    client_secret: str
    kind: str = "oidc"  # oidc | github
    discovery_url: str = ""
    issuer: str = ""
    authorize_url: str = ""
    token_url: str = ""
    userinfo_url: str = ""
    jwks_url: str = ""
    api_url: str = ""
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    display_name: str = ""


_PROVIDER_DEFAULTS: dict[str, dict[str, object]] = {
    "google": {
        "kind": "oidc",
        "discovery_url": "https://accounts.google.com/.well-known/openid-configuration",
        "display_name": "Google",
    },
    "github": {
        "kind": "github",
        "authorize_url": "https://github.com/login/oauth/authorize",
        "token_url": "https://github.com/login/oauth/access_token",
        "api_url": "https://api.github.com",
        "scopes": ("read:user", "user:email"),
        "display_name": "GitHub",
    },
}


def parse_oauth_providers(raw: str, environ: Mapping[str, str]) -> tuple[OAuthProviderConfig, ...]:
    """``name,...`` plus each provider's ``AUTHQL_OAUTH_<NAME>_*`` variables."""
    providers = []
    for name in _csv(raw.lower()):
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name):
            raise ConfigError(f"AUTHQL_OAUTH_PROVIDERS: bad provider name {name!r}")
        prefix = f"AUTHQL_OAUTH_{name.upper().replace('-', '_')}_"
        values: dict[str, object] = {"name": name, **_PROVIDER_DEFAULTS.get(name, {})}
        for key in (
            "client_id",
            "client_secret",
            "discovery_url",
            "issuer",
            "authorize_url",
            "token_url",
            "userinfo_url",
            "jwks_url",
            "api_url",
            "kind",
            "display_name",
        ):
            if (prefix + key.upper()) in environ:
                values[key] = environ[prefix + key.upper()].strip()
        if (prefix + "SCOPES") in environ:
            values["scopes"] = tuple(environ[prefix + "SCOPES"].replace(",", " ").split())
        for required in ("client_id", "client_secret"):
            if not values.get(required):
                raise ConfigError(f"{prefix}{required.upper()} is required for provider {name}")
        config = OAuthProviderConfig(**values)  # type: ignore[arg-type]
        if config.kind == "oidc" and not (config.discovery_url or config.issuer):
            raise ConfigError(f"{prefix}DISCOVERY_URL (or _ISSUER and endpoints) is required")
        if config.kind == "github" and not (config.authorize_url and config.token_url):
            raise ConfigError(f"{prefix}AUTHORIZE_URL and _TOKEN_URL are required")
        providers.append(config)
    return tuple(providers)


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Every operator-facing knob. Field docs are the README's configuration table."""

    env: str = "development"
    database_url: str = "sqlite://./data/authql.sqlite3"
    data_dir: Path = Path("data")
    public_url: str = "http://127.0.0.1:8000"
    secret_key: str = ""
    jwt_private_key: str = ""
    jwt_audience: str = "authql"
    access_token_ttl: int = 900
    refresh_token_ttl: int = 1_209_600
    lockout_threshold: int = 5
    lockout_minutes: int = 15
    rate_limits: Mapping[str, tuple[int, int]] | None = field(
        default_factory=lambda: dict(DEFAULT_RATE_LIMITS)
    )
    trusted_proxies: tuple[IpNetwork, ...] = ()
    cors_origins: tuple[str, ...] = ()
    allowed_redirects: tuple[str, ...] = ()
    require_email_verification: bool = False
    require_two_factor: bool = False
    rest_dialects: tuple[tuple[str, str], ...] = (("node-auth", "/auth"), ("browsary", "/api/auth"))
    node_auth_csrf: bool = False
    oauth_providers: tuple[OAuthProviderConfig, ...] = ()
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65_536
    argon2_parallelism: int = 4
    password_min_length: int = 8
    password_max_length: int = 128
    max_body_bytes: int = 65_536
    graphql_max_depth: int = 10
    graphql_max_aliases: int = 15
    graphql_max_tokens: int = 2_000
    introspection: bool = True
    session_cache_seconds: float = 5.0
    log_level: str = "info"
    log_format: str = "text"
    product_name: str = "authql"
    smtp_url: str = ""
    smtp_timeout: float = 10.0
    mail_from: str = "authql <no-reply@localhost>"
    templates_dir: Path | None = None
    sms_webhook_url: str = ""
    sms_webhook_secret: str = ""
    email_verification_ttl: int = 86_400
    password_reset_ttl: int = 3_600
    email_change_ttl: int = 3_600
    magic_link_ttl: int = 900
    sms_code_ttl: int = 600
    code_max_attempts: int = 5
    delivery_attempts: int = 4
    delivery_backoff: float = 0.5
    event_bus: str = ""
    metrics_token: str = ""
    ws_max_subscriptions_per_connection: int = 20
    ws_max_subscriptions_per_user: int = 50
    sse_heartbeat_seconds: float = 30.0
    tools_prefix: str = "/tools"
    admin_prefix: str = "/admin"
    webhook_attempts: int = 6
    webhook_backoff: float = 1.0
    webhook_timeout: float = 10.0
    deleted_retention_days: int = 30
    cleanup_interval: int = 3600
    registration: str = "open"
    password_rules: tuple[str, ...] = ()
    pwned_passwords_url: str = ""
    pwned_timeout: float = 2.0

    @property
    def production(self) -> bool:
        """True when the operator declared a production deployment."""
        return self.env == "production"

    @property
    def issuer(self) -> str:
        """The ``iss`` of every access token: the public origin, without a trailing slash."""
        return self.public_url.rstrip("/")

    @property
    def event_bus_backend(self) -> str:
        """``memory``, ``postgres`` or a ``redis://`` URL: the explicit choice, else postgres
        when the database is PostgreSQL (so several processes share events with no extra
        service), else memory."""
        if self.event_bus:
            return self.event_bus
        if self.database_url.startswith(("postgres://", "postgresql://", "asyncpg://")):
            return "postgres"
        return "memory"

    @property
    def secure_cookies(self) -> bool:
        """Cookies get ``Secure`` whenever the public URL is https."""
        return self.public_url.startswith("https://")

    def rate_limit(self, action: str) -> tuple[int, int] | None:
        """The (requests, seconds) budget for ``action``, or None when limits are off."""
        if self.rate_limits is None:
            return None
        return self.rate_limits.get(action)

    def with_generated_secrets(self) -> Settings:
        """Fill missing secrets: generate-and-persist in development, refuse in production."""
        missing = [name for name in ("secret_key", "jwt_private_key") if not getattr(self, name)]
        if not missing:
            return self
        if self.production:
            names = ", ".join(f"AUTHQL_{name.upper()}" for name in missing)
            raise ConfigError(f"AUTHQL_ENV=production requires {names}; refusing generated secrets")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        updates: dict[str, str] = {}
        if not self.secret_key:
            updates["secret_key"] = _persisted(
                self.data_dir / "secret_key", lambda: secrets.token_urlsafe(48)
            )
        if not self.jwt_private_key:
            updates["jwt_private_key"] = _persisted(
                self.data_dir / "jwt_private_key.pem", _new_private_key_pem
            )
        logger.warning(
            "development secrets in use (%s), persisted under %s; set them for production",
            ", ".join(missing),
            self.data_dir,
        )
        return replace(self, **updates)


def _new_private_key_pem() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _persisted(path: Path, make: Callable[[], str]) -> str:
    """The secret stored at ``path``, generating it first if there is none.

    Written to a temporary file and linked into place, so a crash never leaves a partial
    secret and two processes starting at once agree on one value.
    """
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make())
        try:
            # Another process won the race: its value stands, ours is dropped.
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            temporary.unlink()
    value = path.read_text().strip()
    if not value:
        raise ConfigError(f"{path} is empty; delete it to generate a new secret")
    return value


# --- parsing -------------------------------------------------------------------------------


def parse_rate_limits(raw: str) -> dict[str, tuple[int, int]] | None:
    """``off`` or ``action=N/period,...`` (period like ``30s``, ``15m``, ``1h``, ``1d``).

    Listed actions override the defaults; unlisted ones keep them.
    """
    raw = raw.strip()
    if raw.lower() == "off":
        return None
    limits = dict(DEFAULT_RATE_LIMITS)
    for item in filter(None, (part.strip() for part in raw.split(","))):
        match = re.fullmatch(r"([a-z_]+)=(\d+)/(\d*)([smhd])", item)
        if not match:
            raise ConfigError(f"AUTHQL_RATE_LIMITS: cannot parse {item!r} (want action=N/15m)")
        action, count, amount, unit = match.groups()
        if action not in DEFAULT_RATE_LIMITS:
            known = ", ".join(sorted(DEFAULT_RATE_LIMITS))
            raise ConfigError(f"AUTHQL_RATE_LIMITS: unknown action {action!r} (known: {known})")
        limits[action] = (int(count), int(amount or 1) * _PERIOD_UNITS[unit])
    return limits


def parse_dialects(raw: str) -> tuple[tuple[str, str], ...]:
    """``name=/prefix,...``; ``none`` mounts nothing."""
    raw = raw.strip()
    if raw.lower() in ("", "none"):
        return ()
    pairs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, prefix = (part.strip() for part in item.partition("="))
        if not sep or not prefix.startswith("/"):
            raise ConfigError(f"AUTHQL_REST_DIALECTS: want name=/prefix, got {item!r}")
        pairs.append((name.strip(), "/" + prefix.strip().strip("/")))
    return tuple(pairs)


def parse_event_bus(raw: str) -> str:
    """``memory``, ``postgres`` or ``redis://host:port/db``."""
    value = raw.strip()
    if value in ("", "memory", "postgres") or value.startswith(("redis://", "rediss://")):
        return value
    raise ConfigError(f"AUTHQL_EVENT_BUS: want memory, postgres or redis://..., got {raw!r}")


REGISTRATION_MODES = ("open", "closed", "approval")
PASSWORD_RULES = ("upper", "lower", "digit", "symbol")


def parse_registration(raw: str) -> str:
    """``open``, ``closed`` or ``approval`` (an admin approves each new account)."""
    value = raw.strip().lower()
    if value not in REGISTRATION_MODES:
        raise ConfigError(f"AUTHQL_REGISTRATION: want open, closed or approval, got {raw!r}")
    return value


def parse_password_rules(raw: str) -> tuple[str, ...]:
    """Required character classes, e.g. ``upper,digit`` (``upper lower digit symbol``)."""
    rules = _csv(raw.lower())
    unknown = [rule for rule in rules if rule not in PASSWORD_RULES]
    if unknown:
        raise ConfigError(f"AUTHQL_PASSWORD_RULES: unknown rule(s) {', '.join(unknown)}")
    return rules


def _bool(raw: str, name: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: expected true/false, got {raw!r}")


def _int(raw: str, name: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name}: must not be negative")
    return value


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _networks(raw: str) -> tuple[IpNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(part, strict=False) for part in _csv(raw))
    except ValueError as exc:
        raise ConfigError(f"AUTHQL_TRUSTED_PROXIES: {exc}") from None


def _sqlite_data_dir(database_url: str) -> Path | None:
    match = re.match(r"sqlite://(.+?)(\?|$)", database_url)
    if not match or match.group(1) == ":memory:":
        return None
    return Path(match.group(1)).parent


#: environment variable -> (Settings field, parser). The README table is checked against this.
ENVIRONMENT: dict[str, tuple[str, object]] = {
    "AUTHQL_ENV": ("env", str.strip),
    "AUTHQL_DATABASE_URL": ("database_url", str.strip),
    "AUTHQL_DATA_DIR": ("data_dir", Path),
    "AUTHQL_PUBLIC_URL": ("public_url", lambda raw: raw.strip().rstrip("/")),
    "AUTHQL_SECRET_KEY": ("secret_key", str.strip),
    "AUTHQL_JWT_PRIVATE_KEY": ("jwt_private_key", lambda raw: raw.replace("\\n", "\n").strip()),
    "AUTHQL_JWT_AUDIENCE": ("jwt_audience", str.strip),
    "AUTHQL_ACCESS_TOKEN_TTL": ("access_token_ttl", _int),
    "AUTHQL_REFRESH_TOKEN_TTL": ("refresh_token_ttl", _int),
    "AUTHQL_LOCKOUT_THRESHOLD": ("lockout_threshold", _int),
    "AUTHQL_LOCKOUT_MINUTES": ("lockout_minutes", _int),
    "AUTHQL_RATE_LIMITS": ("rate_limits", parse_rate_limits),
    "AUTHQL_TRUSTED_PROXIES": ("trusted_proxies", _networks),
    "AUTHQL_CORS_ORIGINS": ("cors_origins", _csv),
    "AUTHQL_ALLOWED_REDIRECTS": ("allowed_redirects", _csv),
    "AUTHQL_REQUIRE_EMAIL_VERIFICATION": ("require_email_verification", _bool),
    "AUTHQL_REQUIRE_TWO_FACTOR": ("require_two_factor", _bool),
    "AUTHQL_REST_DIALECTS": ("rest_dialects", parse_dialects),
    "AUTHQL_NODE_AUTH_CSRF": ("node_auth_csrf", _bool),
    # Read with each provider's AUTHQL_OAUTH_<NAME>_* variables in from_env.
    "AUTHQL_OAUTH_PROVIDERS": ("oauth_providers", lambda raw: ()),
    "AUTHQL_ARGON2_TIME_COST": ("argon2_time_cost", _int),
    "AUTHQL_ARGON2_MEMORY_KIB": ("argon2_memory_kib", _int),
    "AUTHQL_ARGON2_PARALLELISM": ("argon2_parallelism", _int),
    "AUTHQL_PASSWORD_MIN_LENGTH": ("password_min_length", _int),
    "AUTHQL_PASSWORD_MAX_LENGTH": ("password_max_length", _int),
    "AUTHQL_MAX_BODY_BYTES": ("max_body_bytes", _int),
    "AUTHQL_GRAPHQL_MAX_DEPTH": ("graphql_max_depth", _int),
    "AUTHQL_GRAPHQL_MAX_ALIASES": ("graphql_max_aliases", _int),
    "AUTHQL_GRAPHQL_MAX_TOKENS": ("graphql_max_tokens", _int),
    "AUTHQL_INTROSPECTION": ("introspection", _bool),
    "AUTHQL_SESSION_CACHE_SECONDS": ("session_cache_seconds", float),
    "AUTHQL_PRODUCT_NAME": ("product_name", str.strip),
    "AUTHQL_SMTP_URL": ("smtp_url", str.strip),
    "AUTHQL_SMTP_TIMEOUT": ("smtp_timeout", float),
    "AUTHQL_MAIL_FROM": ("mail_from", str.strip),
    "AUTHQL_TEMPLATES_DIR": (
        "templates_dir",
        lambda raw: Path(raw.strip()) if raw.strip() else None,
    ),
    "AUTHQL_SMS_WEBHOOK_URL": ("sms_webhook_url", str.strip),
    "AUTHQL_SMS_WEBHOOK_SECRET": ("sms_webhook_secret", str.strip),
    "AUTHQL_EMAIL_VERIFICATION_TTL": ("email_verification_ttl", _int),
    "AUTHQL_PASSWORD_RESET_TTL": ("password_reset_ttl", _int),
    "AUTHQL_EMAIL_CHANGE_TTL": ("email_change_ttl", _int),
    "AUTHQL_MAGIC_LINK_TTL": ("magic_link_ttl", _int),
    "AUTHQL_SMS_CODE_TTL": ("sms_code_ttl", _int),
    "AUTHQL_CODE_MAX_ATTEMPTS": ("code_max_attempts", _int),
    "AUTHQL_DELIVERY_ATTEMPTS": ("delivery_attempts", _int),
    "AUTHQL_DELIVERY_BACKOFF": ("delivery_backoff", float),
    "AUTHQL_EVENT_BUS": ("event_bus", parse_event_bus),
    "AUTHQL_METRICS_TOKEN": ("metrics_token", str.strip),
    "AUTHQL_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION": ("ws_max_subscriptions_per_connection", _int),
    "AUTHQL_WS_MAX_SUBSCRIPTIONS_PER_USER": ("ws_max_subscriptions_per_user", _int),
    "AUTHQL_SSE_HEARTBEAT_SECONDS": ("sse_heartbeat_seconds", float),
    "AUTHQL_TOOLS_PREFIX": ("tools_prefix", lambda raw: "/" + raw.strip().strip("/")),
    "AUTHQL_ADMIN_PREFIX": ("admin_prefix", lambda raw: "/" + raw.strip().strip("/")),
    "AUTHQL_WEBHOOK_ATTEMPTS": ("webhook_attempts", _int),
    "AUTHQL_WEBHOOK_BACKOFF": ("webhook_backoff", float),
    "AUTHQL_WEBHOOK_TIMEOUT": ("webhook_timeout", float),
    "AUTHQL_DELETED_RETENTION_DAYS": ("deleted_retention_days", _int),
    "AUTHQL_CLEANUP_INTERVAL": ("cleanup_interval", _int),
    "AUTHQL_REGISTRATION": ("registration", parse_registration),
    "AUTHQL_PASSWORD_RULES": ("password_rules", parse_password_rules),
    "AUTHQL_PWNED_PASSWORDS_URL": ("pwned_passwords_url", lambda raw: raw.strip().rstrip("/")),
    "AUTHQL_PWNED_TIMEOUT": ("pwned_timeout", float),
    "AUTHQL_LOG_LEVEL": ("log_level", lambda raw: raw.strip().lower()),
    "AUTHQL_LOG_FORMAT": ("log_format", lambda raw: raw.strip().lower()),
}


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Read Settings from ``environ`` (default: the process environment).

    Unknown ``AUTHQL_*`` names are ignored so that later features' variables never break an
    older server; malformed values raise ConfigError naming the variable.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, (attr, parse) in ENVIRONMENT.items():
        raw = environ.get(name)
        if raw is not None:
            values[attr] = _call(parse, raw, name)
    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.env not in ("development", "production", "test"):
        raise ConfigError(f"AUTHQL_ENV: expected development or production, got {settings.env!r}")
    if "AUTHQL_DATA_DIR" not in environ:
        sqlite_dir = _sqlite_data_dir(settings.database_url)
        if sqlite_dir is not None:
            settings = replace(settings, data_dir=sqlite_dir)
    if environ.get("AUTHQL_OAUTH_PROVIDERS", "").strip():
        settings = replace(
            settings,
            oauth_providers=parse_oauth_providers(environ["AUTHQL_OAUTH_PROVIDERS"], environ),
        )
    if "AUTHQL_ALLOWED_REDIRECTS" not in environ:
        settings = replace(settings, allowed_redirects=(_origin(settings.public_url),))
    if "AUTHQL_INTROSPECTION" not in environ and settings.production:
        settings = replace(settings, introspection=False)
    if settings.sms_webhook_url and not settings.sms_webhook_secret and settings.production:
        raise ConfigError("AUTHQL_SMS_WEBHOOK_URL needs AUTHQL_SMS_WEBHOOK_SECRET in production")
    if settings.password_min_length > settings.password_max_length:
        raise ConfigError("AUTHQL_PASSWORD_MIN_LENGTH exceeds AUTHQL_PASSWORD_MAX_LENGTH")
    return settings


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _call(parse: object, raw: str, name: str) -> object:
    if parse in (_int, _bool):
        return parse(raw, name)  # type: ignore[operator]
    try:
        return parse(raw)  # type: ignore[operator]
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def field_names() -> set[str]:
    """All Settings field names (used by the README sync test)."""
    return {f.name for f in fields(Settings)}
