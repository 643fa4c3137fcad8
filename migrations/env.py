"""Alembic environment: migrations are plain SQL run through SQLAlchemy + psycopg.

DATABASE_URL is a plain libpq URL (postgresql://user@host:port/db); it is adapted to
SQLAlchemy's psycopg driver here, the only place that needs to know.
"""

from __future__ import annotations

import os
import sys

from alembic import context
from sqlalchemy import create_engine, pool


def sqlalchemy_url(database_url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise SystemExit(
        f"DATABASE_URL: expected postgresql://user@host:port/db, got scheme of {database_url.split(':', 1)[0]!r}"
    )


def run_migrations_online() -> None:
    database_url = context.config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not database_url:
        sys.exit("DATABASE_URL: not set; expected postgresql://user@host:port/db")
    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
