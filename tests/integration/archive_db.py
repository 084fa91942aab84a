"""A fresh archive database per test in the session's PostgreSQL, migrated, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg

from services.archive.database import libpq_url, migrate
from services.settings import Settings


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(libpq_url(url))._replace(path=f"/{name}"))


@asynccontextmanager
async def fresh_archive(settings: Settings) -> AsyncIterator[Settings]:
    """``settings`` pointed at a new, migrated database (``archive_<id>``) that is dropped at the end."""
    name = f"archive_{uuid.uuid4().hex[:10]}"
    admin_url = _with_database(settings.database.url, "postgres")
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(settings.database.url, name)
    migrate(url)
    try:
        yield settings.with_overrides(database={"url": url})
    finally:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def archived_rows(settings: Settings, sql: str, *params: object) -> list[tuple[object, ...]]:
    """The rows of one query on the test's archive."""
    async with await psycopg.AsyncConnection.connect(libpq_url(settings.database.url)) as connection:
        cursor = await connection.execute(sql, params or None)
        return await cursor.fetchall()
