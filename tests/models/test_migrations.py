"""The Alembic migrations build the schema the records describe, on PostgreSQL and SQLite alike."""

import os

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from models import db
from tests.conftest import POSTGRES_ADMIN_URL, TEST_SECRET
from web import create_app

TABLES = {"hospitals", "api_keys", "batches", "images", "predictions", "alerts", "model_versions", "audit_events",
          "confirmed_diagnoses"}


def _migrate_round_trip(url: str, tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "INSTANCE_DIR": str(tmp_path), "SECRET_KEY": TEST_SECRET})
    with app.app_context():
        assert not (set(inspect(db.engine).get_table_names()) & TABLES), "the app must not create tables itself"
        upgrade()
        assert TABLES <= set(inspect(db.engine).get_table_names())
        with db.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
        assert differences == [], f"models and migration disagree: {differences}"
        downgrade(revision="base")
        assert not (set(inspect(db.engine).get_table_names()) & TABLES)
        db.engine.dispose()


def test_migration_applies_to_an_empty_sqlite_database(tmp_path):
    _migrate_round_trip(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path)


def test_migration_applies_to_an_empty_postgresql_database(tmp_path):
    name = f"melanoma_migration_test_{os.getpid()}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        _migrate_round_trip(f"{base}/{name}", tmp_path)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
