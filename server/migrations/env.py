"""Alembic's entry point: migrate the connection ``server.schema`` hands over.

Never run with a URL from an ini file: the server's settings name the database, and
``server.schema`` opens the connection, so there is one way in, whatever the caller.
"""

from __future__ import annotations

from alembic import context

from server.schema import include_object, load_metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=load_metadata(),
    include_object=include_object,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
