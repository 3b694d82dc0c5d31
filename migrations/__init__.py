"""Alembic environment of the ledger schema (shipped as `pipeline.migrations`)."""
