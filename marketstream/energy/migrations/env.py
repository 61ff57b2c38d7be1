"""Alembic environment: always run programmatically by ``marketstream.energy.db.migrate``,
which passes an open connection (no alembic.ini, no URL here)."""

from alembic import context

from marketstream.energy.db import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with marketstream.energy.db.migrate(url), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
