"""The command line, run as a real subprocess against real files in a scratch folder."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import LOGIN, PASSWORD, REGISTER

#: Generous, but a hung command fails the test instead of the whole run.
COMMAND_TIMEOUT = 60
SERVE_START_TIMEOUT = 15.0


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment for the CLI: its own sqlite file and data folder, cheap hashing."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AUTHQL_") and name not in ("PYTHONWARNINGS",)
    }
    env.update(
        AUTHQL_DATABASE_URL=f"sqlite://{tmp_path}/db.sqlite3",
        AUTHQL_DATA_DIR=str(tmp_path / "data"),
        AUTHQL_ARGON2_TIME_COST="1",
        AUTHQL_ARGON2_MEMORY_KIB="8",
        AUTHQL_ARGON2_PARALLELISM="1",
        AUTHQL_LOG_LEVEL="warning",
    )
    return env


def run_cli(
    env: dict[str, str], *args: str, timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m authql <args>`` to completion."""
    return subprocess.run(  # noqa: S603 - fixed interpreter and arguments
        [sys.executable, "-m", "authql", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tables(database: Path) -> set[str]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}


@contextlib.contextmanager
def serving(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Run ``authql serve`` on a free port until healthy; yield its URL; always stop it."""
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed interpreter and arguments
            [sys.executable, "-m", "authql", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + SERVE_START_TIMEOUT
            while True:
                if process.poll() is not None:
                    pytest.fail(f"serve exited with {process.returncode}: {_tail(log_path)}")
                try:
                    if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"serve did not become healthy in time: {_tail(log_path)}")
                time.sleep(0.1)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _tail(path: Path) -> str:
    return path.read_text()[-2000:]


@pytest.fixture
def server(cli_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A real ``authql serve`` for the test; yields its base URL."""
    with serving(cli_env, tmp_path / "serve.log") as base_url:
        yield base_url


def assert_clean_refusal(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit status 2, a message naming what is wrong, and no Python traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    for needle in needles:
        assert needle in output, output
    assert "Traceback" not in output, output


# --- commands -------------------------------------------------------------------------------


def test_schema_prints_the_sdl(cli_env: dict[str, str]) -> None:
    """authql schema prints the GraphQL SDL."""
    result = run_cli(cli_env, "schema")
    assert result.returncode == 0, result.stderr
    assert "type Mutation" in result.stdout
    assert "login(" in result.stdout
    assert "type Subscription" in result.stdout


def test_openapi_prints_a_dialects_document(cli_env: dict[str, str], tmp_path: Path) -> None:
    """authql openapi prints one dialect's document (at its native prefix when unmounted),
    or every mounted one, without touching the database or persisting secrets."""
    import json

    one = run_cli(cli_env, "openapi", "--dialect", "fluxkit")
    assert one.returncode == 0, one.stderr
    assert "/auth/register" in json.loads(one.stdout)["paths"]
    mounted = json.loads(run_cli(cli_env, "openapi").stdout)
    assert set(mounted) == {"node-auth", "browsary"}
    assert "/api/auth/login" in mounted["browsary"]["paths"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "db.sqlite3").exists()
    unknown = run_cli(cli_env, "openapi", "--dialect", "nope")
    assert_clean_refusal(unknown, "nope")


def test_migrate_creates_the_tables_and_is_repeatable(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """authql migrate creates the sqlite file with every table; running it again is harmless."""
    database = tmp_path / "db.sqlite3"
    first = run_cli(cli_env, "migrate")
    assert first.returncode == 0, first.stderr
    assert database.exists()
    expected = {"users", "sessions", "refresh_tokens", "auth_events", "user_roles"}
    assert expected <= tables(database)
    second = run_cli(cli_env, "migrate")
    assert second.returncode == 0, second.stderr
    assert expected <= tables(database)


def test_migrate_creates_a_missing_database_folder(cli_env: dict[str, str], tmp_path: Path) -> None:
    """A database path in a folder that does not exist yet is created."""
    database = tmp_path / "nested" / "deeper" / "authql.sqlite3"
    env = {**cli_env, "AUTHQL_DATABASE_URL": f"sqlite://{database}"}
    result = run_cli(env, "migrate")
    assert result.returncode == 0, result.stderr
    assert "users" in tables(database)


def test_create_admin_prints_the_id_and_is_idempotent(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """create-admin prints the account id; the same email again prints the same id."""
    first = run_cli(cli_env, "create-admin", "--email", "root@example.com", "--password", PASSWORD)
    assert first.returncode == 0, first.stderr
    user_id = first.stdout.strip()
    assert str(uuid.UUID(user_id)) == user_id
    second = run_cli(cli_env, "create-admin", "--email", "ROOT@example.com", "--password", PASSWORD)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == user_id
    with sqlite3.connect(tmp_path / "db.sqlite3") as connection:
        users = connection.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        roles = connection.execute("SELECT role FROM user_roles").fetchall()
    assert users == 1
    assert roles == [("admin",)]


def test_create_admin_refuses_bad_input(cli_env: dict[str, str]) -> None:
    """A malformed email exits 2 with a message, no traceback."""
    result = run_cli(cli_env, "create-admin", "--email", "nope", "--password", PASSWORD)
    assert_clean_refusal(result, "email")


def test_serve_answers_graphql_over_real_http(
    server: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """authql serve runs a real server: health, register, login and me over HTTP."""
    with httpx.Client(base_url=server, timeout=10.0) as http:
        health = http.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "healthy"

        variables = {"input": {"email": "ada@example.com", "password": PASSWORD}}
        register = http.post("/graphql", json={"query": REGISTER, "variables": variables})
        assert register.status_code == 200, register.text
        assert register.json()["data"]["register"]["status"] == "OK"

        login = http.post(
            "/graphql",
            json={
                "query": LOGIN,
                "variables": {"identifier": "ada@example.com", "password": PASSWORD},
            },
        ).json()["data"]["login"]
        assert login["status"] == "OK"

        me = http.post(
            "/graphql",
            json={"query": "{ me { email } }"},
            headers={"authorization": f"Bearer {login['accessToken']}"},
        )
        assert me.json() == {"data": {"me": {"email": "ada@example.com"}}}

        jwks = http.get("/.well-known/jwks.json").json()
        assert len(jwks["keys"]) == 1

    data_dir = Path(cli_env["AUTHQL_DATA_DIR"])
    assert (data_dir / "secret_key").is_file()
    assert (data_dir / "jwt_private_key.pem").is_file()
    assert (tmp_path / "db.sqlite3").is_file()


def test_serve_keeps_tokens_valid_across_restarts(cli_env: dict[str, str], tmp_path: Path) -> None:
    """Development secrets persisted by the first start are reused by the next one."""
    run_cli(cli_env, "create-admin", "--email", "root@example.com", "--password", PASSWORD)
    with serving(cli_env, tmp_path / "first.log") as base_url:
        login = httpx.post(
            f"{base_url}/graphql",
            json={
                "query": LOGIN,
                "variables": {"identifier": "root@example.com", "password": PASSWORD},
            },
            timeout=10.0,
        ).json()["data"]["login"]
    token = login["accessToken"]
    with serving(cli_env, tmp_path / "second.log") as base_url:
        me = httpx.post(
            f"{base_url}/graphql",
            json={"query": "{ me { email roles } }"},
            headers={"authorization": f"Bearer {token}"},
            timeout=10.0,
        ).json()
    assert me["data"]["me"] == {"email": "root@example.com", "roles": ["admin"]}


# --- refusals -------------------------------------------------------------------------------


def test_invalid_environment_value_exits_2_naming_the_variable(
    cli_env: dict[str, str],
) -> None:
    """A malformed setting is reported by name with exit status 2, not a traceback."""
    env = {**cli_env, "AUTHQL_ACCESS_TOKEN_TTL": "abc"}
    result = run_cli(env, "serve", "--port", str(free_port()))
    assert_clean_refusal(result, "AUTHQL_ACCESS_TOKEN_TTL")


def test_production_without_secrets_refuses_to_serve(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """AUTHQL_ENV=production without secrets exits 2 naming AUTHQL_SECRET_KEY; nothing is
    generated."""
    env = {**cli_env, "AUTHQL_ENV": "production"}
    result = run_cli(env, "serve", "--port", str(free_port()))
    assert_clean_refusal(result, "AUTHQL_SECRET_KEY")
    assert not (tmp_path / "data" / "secret_key").exists()


def test_several_workers_on_sqlite_are_refused(cli_env: dict[str, str]) -> None:
    """--workers 2 with an sqlite database exits 2 pointing at PostgreSQL."""
    result = run_cli(cli_env, "serve", "--port", str(free_port()), "--workers", "2")
    assert_clean_refusal(result, "PostgreSQL")


def test_unknown_command_is_a_usage_error(cli_env: dict[str, str]) -> None:
    """An unknown command prints usage and exits 2."""
    result = run_cli(cli_env, "frobnicate")
    assert result.returncode == 2
    assert re.search(r"usage: authql", result.stderr)
