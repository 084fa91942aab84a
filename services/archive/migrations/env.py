"""Alembic environment of the archive: runs the migrations online on the connection given in the config."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from services.archive.database import sqlalchemy_url

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""
engine = create_engine(sqlalchemy_url(url), future=True)
with engine.connect() as connection:
    context.configure(connection=connection, version_table="archive_version")
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
