"""Durable state: SQLAlchemy 2 models, the database connection, Alembic migrations."""
