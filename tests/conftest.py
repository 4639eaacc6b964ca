"""Shared fixtures: one database per test session, emptied after every test.

The database is chosen by ``AUTHQL_TEST_DATABASE_URL`` (default: in-memory SQLite); CI runs
the same suite again against a real PostgreSQL. The schema is created by the real
migrations, so every run also proves they apply. Apps are built per test (cheap: the
Strawberry schema is cached) with cheap argon2 parameters and rate limits off unless a test
asks for them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from tortoise import Tortoise
from tortoise.contrib.test import truncate_all_models

from authql.app import create_app
from authql.db import tortoise_config
from authql.services import Services, build_services
from authql.services.clock import FrozenClock
from authql.services.mail import MemoryMailer
from authql.services.sms import MemorySms
from authql.settings import Settings, _new_private_key_pem
from tests.support import GraphQLClient

_SCRATCH = tempfile.mkdtemp(prefix="authql-test-")
TEST_DATABASE_URL = os.environ.get(
    "AUTHQL_TEST_DATABASE_URL", f"sqlite://{_SCRATCH}/test.sqlite3?synchronous=OFF"
)
_PRIVATE_KEY = _new_private_key_pem()


async def _recreate_postgres_database(url: str) -> None:
    import asyncpg

    base, _, name = url.rpartition("/")
    name = name.split("?", 1)[0]
    admin = await asyncpg.connect(base.replace("postgres://", "postgresql://", 1) + "/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


@pytest.fixture(scope="session", autouse=True)
async def database() -> AsyncIterator[None]:
    """Create the test database through the real migrations, once per session."""
    from tortoise.migrations.api import migrate

    if TEST_DATABASE_URL.startswith("postgres"):
        await _recreate_postgres_database(TEST_DATABASE_URL)
    config = tortoise_config(TEST_DATABASE_URL)
    await migrate(config=config)
    await Tortoise.close_connections()
    await Tortoise.init(config=config)
    yield
    await Tortoise.close_connections()
    shutil.rmtree(_SCRATCH, ignore_errors=True)


@pytest.fixture(autouse=True)
async def _empty_tables(database: None) -> AsyncIterator[None]:
    yield
    await truncate_all_models()


def settings_for_tests(**overrides: Any) -> Settings:
    """Settings for in-process tests: cheap hashing, no limits, no dialects."""
    base = Settings(
        env="test",
        database_url=TEST_DATABASE_URL,
        secret_key="test-secret-key-" + "x" * 32,
        jwt_private_key=_PRIVATE_KEY,
        rate_limits=None,
        rest_dialects=(),
        argon2_time_cost=1,
        argon2_memory_kib=8,
        argon2_parallelism=1,
        session_cache_seconds=60.0,
        delivery_backoff=0.01,
    )
    return replace(base, **overrides)


@pytest.fixture
def clock() -> FrozenClock:
    """A clock the test moves by hand."""
    return FrozenClock()


@pytest.fixture
def mailer() -> MemoryMailer:
    """Where apps built by ``make_app`` send mail (unless a test passes its own)."""
    return MemoryMailer()


@pytest.fixture
def sms() -> MemorySms:
    """Where apps built by ``make_app`` send texts (unless a test passes its own)."""
    return MemorySms()


@pytest.fixture
async def make_app(
    clock: FrozenClock, mailer: MemoryMailer, sms: MemorySms
) -> AsyncIterator[Callable[..., Starlette]]:
    """Build an app with test settings, overridden by keyword (``mailer=``/``sms=`` choose
    other senders, e.g. a real SMTP mailer)."""
    built: list[Services] = []

    def make(*, mailer: Any = mailer, sms: Any = sms, **overrides: Any) -> Starlette:
        settings = settings_for_tests(**overrides)
        services: Services = build_services(settings, clock=clock, mailer=mailer, sms=sms)
        built.append(services)
        return create_app(settings, services=services, manage_database=False)

    yield make
    for services in built:
        # Deferred work and deliveries finish before the tables are emptied.
        await services.delivery.drain()
        await services.delivery.close()
        services.close()


@pytest.fixture
async def make_client(
    make_app: Callable[..., Starlette],
) -> AsyncIterator[Callable[..., GraphQLClient]]:
    """Clients for apps built with the given setting overrides."""
    opened: list[httpx.AsyncClient] = []

    def make(app: Starlette | None = None, **overrides: Any) -> GraphQLClient:
        target = app or make_app(**overrides)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=target, client=("203.0.113.7", 50000)),
            base_url="http://testserver",
        )
        opened.append(http)
        return GraphQLClient(http, target)

    yield make
    for http in opened:
        await http.aclose()


@pytest.fixture
def client(make_client: Callable[..., GraphQLClient]) -> GraphQLClient:
    """A client for an app with default test settings."""
    return make_client()
