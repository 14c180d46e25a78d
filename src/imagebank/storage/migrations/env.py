"""Alembic environment: runs against the engine Imagebank hands over (see ``database.upgrade``)."""

from alembic import context
from sqlalchemy import Engine

from imagebank.storage.schema import metadata

engine: Engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
