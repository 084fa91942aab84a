"""Connections to the archive database (psycopg 3) and its migrations (alembic).

ArchiveError                 anything that stops the archive from doing its job
└── ArchiveUnavailable       the database does not answer, or its schema is not the one we need
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import create_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
CONNECT_TIMEOUT_S = 5


class ArchiveError(Exception):
    """Root of the errors of ``services.archive``."""


class ArchiveUnavailable(ArchiveError):
    """The archive database does not answer or is not migrated."""


def sqlalchemy_url(url: str) -> str:
    """A libpq URL (``postgresql://...``) as SQLAlchemy's URL for the psycopg 3 driver."""
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        parts = parts._replace(scheme="postgresql+psycopg")
    return urlunsplit(parts)


def libpq_url(url: str) -> str:
    """The URL libpq takes (without a SQLAlchemy driver suffix)."""
    parts = urlsplit(url)
    if parts.scheme.startswith("postgresql+"):
        parts = parts._replace(scheme="postgresql")
    return urlunsplit(parts)


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port or 5432}"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{parts.path}"


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", libpq_url(url).replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the archive's schema to the newest migration (nothing to do when it is there)."""
    try:
        command.upgrade(_config(url), "head")
    except Exception as exc:
        if _is_connection_error(exc):
            raise unavailable(url, exc) from None
        raise


def schema_is_current(url: str) -> bool:
    """Whether the database holds the newest migration."""
    head = ScriptDirectory.from_config(_config(url)).get_current_head()
    engine = create_engine(sqlalchemy_url(libpq_url(url)))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": "archive_version"})
            return context.get_current_revision() == head
    finally:
        engine.dispose()


def _is_connection_error(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, psycopg.OperationalError):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def unavailable(url: str, exc: BaseException) -> ArchiveUnavailable:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ArchiveUnavailable(
        f"the archive database at {shown_url(url)} does not answer ({first_line}); start it with "
        "'crm-pulse infra up', or point DATABASE_URL at a running PostgreSQL"
    )


async def connect(url: str, *, autocommit: bool = False) -> psycopg.AsyncConnection[tuple[object, ...]]:
    """An async connection to the archive; ``ArchiveUnavailable`` when it does not answer."""
    try:
        return await psycopg.AsyncConnection.connect(
            libpq_url(url), autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S
        )
    except psycopg.OperationalError as exc:
        raise unavailable(url, exc) from None


POOL_TIMEOUT_S = 5.0


def archive_pool(url: str, *, max_size: int = 4) -> AsyncConnectionPool:
    """A small pool of connections to the archive for the API, not opened yet (``await pool.open(wait=False)``)."""
    return AsyncConnectionPool(
        libpq_url(url),
        min_size=1,
        max_size=max_size,
        open=False,
        timeout=POOL_TIMEOUT_S,
        kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "autocommit": True},
        name="archive",
    )
