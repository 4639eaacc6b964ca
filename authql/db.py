"""Tortoise configuration and the database life cycle (migrate, open, close)."""

from __future__ import annotations

from typing import Any

from authql.models import MODEL_MODULES

MIGRATIONS_MODULE = "authql.migrations"


def tortoise_config(database_url: str) -> dict[str, Any]:
    """The Tortoise config dict for ``database_url`` (sqlite:// or postgres://)."""
    return {
        "connections": {"default": database_url},
        "apps": {
            "models": {
                "models": MODEL_MODULES,
                "default_connection": "default",
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


async def migrate(database_url: str) -> None:
    """Apply pending migrations (creates the sqlite file and its folder if needed)."""
    from tortoise import Tortoise
    from tortoise.migrations.api import migrate as run_migrations

    _ensure_sqlite_folder(database_url)
    try:
        await run_migrations(config=tortoise_config(database_url))
    finally:
        await Tortoise.close_connections()


def _ensure_sqlite_folder(database_url: str) -> None:
    from pathlib import Path

    if database_url.startswith("sqlite://") and ":memory:" not in database_url:
        path = database_url.removeprefix("sqlite://").split("?", 1)[0]
        Path(path).parent.mkdir(parents=True, exist_ok=True)


#: For the `tortoise` CLI (makemigrations): `tortoise -c authql.db.TORTOISE_ORM makemigrations`
TORTOISE_ORM = tortoise_config("sqlite://./data/authql.sqlite3")
