"""Alembic environment: one metadata for every domain's tables."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

import bastion.accounts.models  # noqa: F401  (registers tables)
import bastion.advisories.models  # noqa: F401
import bastion.events  # noqa: F401
import bastion.insights.models  # noqa: F401
import bastion.packaging.models  # noqa: F401
import bastion.scanning.models  # noqa: F401
import bastion.simple.models  # noqa: F401
import bastion.tuf.models  # noqa: F401
from bastion.db import Base

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or ""
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
