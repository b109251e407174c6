"""Alembic migrations of the server's database (run by ``loaxa db upgrade``)."""
