"""Settings: environment parsing, documented defaults, secrets policy and the README table."""

from __future__ import annotations

import ipaddress
import re
import stat
from dataclasses import fields, replace
from pathlib import Path

import pytest

from authql.settings import (
    DEFAULT_RATE_LIMITS,
    ENVIRONMENT,
    ConfigError,
    Settings,
    from_env,
    parse_dialects,
    parse_rate_limits,
)

README = Path(__file__).resolve().parents[2] / "README.md"


# --- defaults -------------------------------------------------------------------------------


def test_defaults_match_the_documented_configuration() -> None:
    """An empty environment yields the defaults CONFIG.md promises operators."""
    settings = from_env({})
    assert settings.env == "development"
    assert settings.database_url == "sqlite://./data/authql.sqlite3"
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.access_token_ttl == 900
    assert settings.refresh_token_ttl == 1_209_600
    assert settings.lockout_threshold == 5
    assert settings.lockout_minutes == 15
    assert settings.rate_limits == DEFAULT_RATE_LIMITS
    assert settings.trusted_proxies == ()
    assert settings.cors_origins == ()
    assert settings.require_email_verification is False
    assert settings.rest_dialects == (("node-auth", "/auth"), ("browsary", "/api/auth"))
    assert settings.introspection is True
    assert settings.log_level == "info"
    assert settings.log_format == "text"
    assert settings.issuer == "http://127.0.0.1:8000"
    assert settings.secure_cookies is False


def test_data_dir_defaults_to_the_sqlite_files_folder(tmp_path: Path) -> None:
    """Without AUTHQL_DATA_DIR, generated secrets live next to the SQLite database."""
    assert from_env({}).data_dir == Path("data")
    url = f"sqlite://{tmp_path}/db/authql.sqlite3?busy_timeout=5000"
    assert from_env({"AUTHQL_DATABASE_URL": url}).data_dir == tmp_path / "db"
    explicit = from_env({"AUTHQL_DATABASE_URL": url, "AUTHQL_DATA_DIR": str(tmp_path / "x")})
    assert explicit.data_dir == tmp_path / "x"
    postgres = from_env({"AUTHQL_DATABASE_URL": "postgres://u@localhost/authql"})
    assert postgres.data_dir == Settings().data_dir


def test_every_environment_variable_maps_to_a_settings_field() -> None:
    """ENVIRONMENT only names real Settings fields, each once, all spelled AUTHQL_*."""
    names = {f.name for f in fields(Settings)}
    targets = [attr for attr, _ in ENVIRONMENT.values()]
    assert set(targets) <= names
    assert len(targets) == len(set(targets))
    assert all(re.fullmatch(r"AUTHQL_[A-Z0-9_]+", name) for name in ENVIRONMENT)


def test_values_are_read_from_the_environment() -> None:
    """Each kind of value (text, int, bool, list, url) is parsed from its variable."""
    settings = from_env(
        {
            "AUTHQL_ACCESS_TOKEN_TTL": "300",
            "AUTHQL_REQUIRE_EMAIL_VERIFICATION": "yes",
            "AUTHQL_CORS_ORIGINS": " https://a.example , https://b.example ,",
            "AUTHQL_PUBLIC_URL": "https://auth.example.com/",
            "AUTHQL_JWT_PRIVATE_KEY": "-----BEGIN\\nKEY-----",
            "AUTHQL_SESSION_CACHE_SECONDS": "2.5",
            "AUTHQL_LOG_LEVEL": " DEBUG ",
        }
    )
    assert settings.access_token_ttl == 300
    assert settings.require_email_verification is True
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.public_url == "https://auth.example.com"
    assert settings.issuer == "https://auth.example.com"
    assert settings.secure_cookies is True
    assert settings.jwt_private_key == "-----BEGIN\nKEY-----"
    assert settings.session_cache_seconds == 2.5
    assert settings.log_level == "debug"


def test_unknown_authql_variables_are_ignored() -> None:
    """A later feature's variable does not break an older server."""
    assert from_env({"AUTHQL_SOMETHING_NEW": "1"}) == from_env({})


# --- rate limits ----------------------------------------------------------------------------


def test_rate_limits_off_disables_every_limit() -> None:
    """'off' (any case) means no limits at all."""
    assert parse_rate_limits("off") is None
    assert parse_rate_limits(" OFF ") is None
    settings = from_env({"AUTHQL_RATE_LIMITS": "off"})
    assert settings.rate_limits is None
    assert settings.rate_limit("login") is None


def test_rate_limits_merge_over_the_defaults() -> None:
    """Listed actions override their defaults; unlisted ones keep them."""
    limits = parse_rate_limits("login=10/15m,register_ip=5/1h")
    assert limits is not None
    assert limits["login"] == (10, 900)
    assert limits["register_ip"] == (5, 3600)
    for action in set(DEFAULT_RATE_LIMITS) - {"login", "register_ip"}:
        assert limits[action] == DEFAULT_RATE_LIMITS[action]
    assert parse_rate_limits("refresh_ip=30/s , login=3/2d") == {
        **DEFAULT_RATE_LIMITS,
        "refresh_ip": (30, 1),
        "login": (3, 2 * 86400),
    }
    assert parse_rate_limits("") == DEFAULT_RATE_LIMITS


def test_parse_rate_limits_does_not_mutate_the_defaults() -> None:
    """Overrides land in a copy; DEFAULT_RATE_LIMITS stays as shipped."""
    before = dict(DEFAULT_RATE_LIMITS)
    parse_rate_limits("login=1/1s")
    assert before == DEFAULT_RATE_LIMITS


@pytest.mark.parametrize(
    "raw",
    ["login", "login=10", "login=ten/15m", "login=10/15w", "=10/1m", "login=-1/1m", "a=1/1m;"],
)
def test_bad_rate_limits_name_the_variable(raw: str) -> None:
    """A malformed spec is a ConfigError naming AUTHQL_RATE_LIMITS."""
    with pytest.raises(ConfigError, match="AUTHQL_RATE_LIMITS"):
        parse_rate_limits(raw)
    with pytest.raises(ConfigError, match="AUTHQL_RATE_LIMITS"):
        from_env({"AUTHQL_RATE_LIMITS": raw})


# --- dialects, proxies ----------------------------------------------------------------------


def test_parse_dialects() -> None:
    """'name=/prefix,...' is parsed in order and normalised; 'none' or empty mounts nothing."""
    assert parse_dialects("node-auth=/auth,browsary=/api/auth") == (
        ("node-auth", "/auth"),
        ("browsary", "/api/auth"),
    )
    assert parse_dialects(" node-auth=/v1/auth/ ") == (("node-auth", "/v1/auth"),)
    assert parse_dialects("none") == ()
    assert parse_dialects("NONE") == ()
    assert parse_dialects("") == ()
    assert from_env({"AUTHQL_REST_DIALECTS": "none"}).rest_dialects == ()


@pytest.mark.parametrize("raw", ["node-auth", "node-auth="])
def test_bad_dialects_name_the_variable(raw: str) -> None:
    """A dialect without a /prefix is a ConfigError naming AUTHQL_REST_DIALECTS."""
    with pytest.raises(ConfigError, match="AUTHQL_REST_DIALECTS"):
        from_env({"AUTHQL_REST_DIALECTS": raw})


def test_trusted_proxies_parse_ips_and_cidrs() -> None:
    """Single addresses and CIDRs, IPv4 and IPv6, become networks."""
    settings = from_env({"AUTHQL_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7,fd00::/8"})
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert ipaddress.ip_address("10.1.2.3") in settings.trusted_proxies[0]


@pytest.mark.parametrize("raw", ["10.0.0.0/33", "not-an-ip", "10.0.0.1,300.1.1.1"])
def test_bad_trusted_proxies_name_the_variable(raw: str) -> None:
    """An unparsable proxy entry is a ConfigError naming AUTHQL_TRUSTED_PROXIES."""
    with pytest.raises(ConfigError, match="AUTHQL_TRUSTED_PROXIES"):
        from_env({"AUTHQL_TRUSTED_PROXIES": raw})


# --- malformed values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("AUTHQL_ACCESS_TOKEN_TTL", "15m"),
        ("AUTHQL_ACCESS_TOKEN_TTL", "-1"),
        ("AUTHQL_REFRESH_TOKEN_TTL", ""),
        ("AUTHQL_LOCKOUT_THRESHOLD", "five"),
        ("AUTHQL_ARGON2_MEMORY_KIB", "64k"),
        ("AUTHQL_MAX_BODY_BYTES", "1.5"),
        ("AUTHQL_SESSION_CACHE_SECONDS", "soon"),
    ],
)
def test_bad_numbers_name_the_variable(name: str, raw: str) -> None:
    """A malformed number is a ConfigError naming its variable."""
    with pytest.raises(ConfigError, match=name):
        from_env({name: raw})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("NO", False),
        ("off", False),
    ],
)
def test_booleans(raw: str, expected: bool) -> None:
    """Booleans accept the usual spellings in any case."""
    assert (
        from_env({"AUTHQL_REQUIRE_EMAIL_VERIFICATION": raw}).require_email_verification is expected
    )


@pytest.mark.parametrize("name", ["AUTHQL_REQUIRE_EMAIL_VERIFICATION", "AUTHQL_INTROSPECTION"])
def test_bad_booleans_name_the_variable(name: str) -> None:
    """A value that is neither true nor false is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=name):
        from_env({name: "maybe"})


def test_unknown_environment_name_is_refused() -> None:
    """AUTHQL_ENV must be development, production or test."""
    with pytest.raises(ConfigError, match="AUTHQL_ENV"):
        from_env({"AUTHQL_ENV": "prod"})


def test_min_password_length_above_max_is_refused() -> None:
    """Contradictory password bounds fail at start-up, naming both variables."""
    with pytest.raises(ConfigError, match="AUTHQL_PASSWORD_MIN_LENGTH"):
        from_env({"AUTHQL_PASSWORD_MIN_LENGTH": "200", "AUTHQL_PASSWORD_MAX_LENGTH": "100"})


# --- production -----------------------------------------------------------------------------


def test_production_turns_introspection_off_by_default() -> None:
    """AUTHQL_ENV=production disables introspection unless explicitly re-enabled."""
    assert from_env({"AUTHQL_ENV": "production"}).introspection is False
    assert from_env({}).introspection is True
    reenabled = from_env({"AUTHQL_ENV": "production", "AUTHQL_INTROSPECTION": "true"})
    assert reenabled.introspection is True


def test_production_refuses_generated_secrets(tmp_path: Path) -> None:
    """In production, missing secrets are a ConfigError naming exactly the missing variables."""
    production = Settings(env="production", data_dir=tmp_path / "data")
    with pytest.raises(ConfigError) as raised:
        production.with_generated_secrets()
    assert "AUTHQL_SECRET_KEY" in str(raised.value)
    assert "AUTHQL_JWT_PRIVATE_KEY" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        replace(production, secret_key="s" * 48).with_generated_secrets()
    assert "AUTHQL_JWT_PRIVATE_KEY" in str(raised.value)
    assert "AUTHQL_SECRET_KEY" not in str(raised.value)
    assert not (tmp_path / "data").exists()  # nothing was written


def test_production_with_secrets_is_left_alone(tmp_path: Path) -> None:
    """Configured secrets are used as given."""
    configured = Settings(
        env="production", data_dir=tmp_path, secret_key="s" * 48, jwt_private_key="pem"
    )
    assert configured.with_generated_secrets() is configured


# --- development secrets --------------------------------------------------------------------


def test_development_generates_private_secret_files_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Missing secrets are generated under data_dir (mode 0600) and reused on the next start."""
    data_dir = tmp_path / "nested" / "data"
    first = Settings(data_dir=data_dir).with_generated_secrets()
    assert len(first.secret_key) >= 32
    assert first.jwt_private_key.startswith("-----BEGIN PRIVATE KEY-----")
    files = sorted(data_dir.iterdir())
    assert [path.name for path in files] == ["jwt_private_key.pem", "secret_key"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "development secrets" in caplog.text
    second = Settings(data_dir=data_dir).with_generated_secrets()
    assert second.secret_key == first.secret_key
    assert second.jwt_private_key == first.jwt_private_key


def test_development_generated_key_is_usable_for_access_tokens(tmp_path: Path) -> None:
    """The generated PEM is an Ed25519 key the token service accepts."""
    from authql.services.tokens import AccessTokenService

    settings = Settings(data_dir=tmp_path).with_generated_secrets()
    service = AccessTokenService(
        settings.jwt_private_key, issuer=settings.issuer, audience=settings.jwt_audience, ttl=60
    )
    assert service.algorithm == "EdDSA"


def test_an_empty_persisted_secret_is_never_used(tmp_path: Path) -> None:
    """A secret file left empty (say, by a crash mid-write) is refused or replaced, never used."""
    (tmp_path / "secret_key").write_text("")
    try:
        settings = Settings(data_dir=tmp_path).with_generated_secrets()
    except ConfigError as exc:
        assert "secret_key" in str(exc)
    else:
        assert len(settings.secret_key) >= 32, f"empty secret in use: {settings.secret_key!r}"


def test_development_keeps_a_configured_secret(tmp_path: Path) -> None:
    """Only the missing secret is generated; a configured one is neither replaced nor written."""
    settings = Settings(data_dir=tmp_path, secret_key="configured").with_generated_secrets()
    assert settings.secret_key == "configured"
    assert settings.jwt_private_key
    assert not (tmp_path / "secret_key").exists()


# --- README sync ----------------------------------------------------------------------------


def _readme_variables() -> list[str]:
    text = README.read_text() if README.exists() else ""
    match = re.search(r"^<!-- config:start -->$(.*?)^<!-- config:end -->$", text, re.M | re.S)
    assert match, f"{README} has no table between <!-- config:start --> and <!-- config:end -->"
    names: list[str] = []
    for line in match.group(1).splitlines():
        if line.startswith("| `AUTHQL_"):
            first_cell = line.split("|")[1]
            names.extend(re.findall(r"`(AUTHQL_[A-Z0-9_]+)`", first_cell))
    return names


def test_readme_configuration_table_lists_exactly_the_environment() -> None:
    """The README's configuration table documents every variable Settings reads, and no other."""
    documented = _readme_variables()
    assert len(documented) == len(set(documented)), "a variable is documented twice"
    missing = set(ENVIRONMENT) - set(documented)
    stale = set(documented) - set(ENVIRONMENT)
    assert not missing and not stale, (
        f"undocumented in README: {sorted(missing)}; documented but not read: {sorted(stale)}"
    )
