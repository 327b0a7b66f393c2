"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import bastion.accounts.models  # noqa: F401  (registers tables)
import bastion.events  # noqa: F401
import bastion.packaging.models  # noqa: F401
import bastion.simple.models  # noqa: F401
import bastion.tuf.models  # noqa: F401
from bastion.db import Base


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert differences == [], f"models and migrations differ; add a migration: {differences}"
