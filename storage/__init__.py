"""Persistence: SQLAlchemy models and sessions, Alembic migrations, the blob store (docs/architecture.md)."""
