"""The Alembic migrations build the schema the records describe, on PostgreSQL and SQLite alike."""

import os

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from models import db
from tests.conftest import POSTGRES_ADMIN_URL, TEST_SECRET
from web import create_app

TABLES = {"hospitals", "api_keys", "batches", "images", "predictions", "alerts", "model_versions", "audit_events",
          "confirmed_diagnoses", "shift_measurements", "users", "user_hospitals"}


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


def test_model_statuses_are_read_from_what_the_rows_said_before(tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'old.db'}", "INSTANCE_DIR": str(tmp_path)})
    with app.app_context():
        upgrade(revision="0005")
        with db.engine.begin() as connection:
            for number, champion, promoted in ((1, True, "2026-11-01"), (2, False, "2026-10-01"), (3, False, None)):
                connection.execute(text(
                    "INSERT INTO model_versions (id, name, version, artifact_path, artifact_sha256, class_names, "
                    "input_size, alert_threshold, metrics, card, is_champion, created_at, promoted_at) VALUES "
                    "(:id, 'm', :id, 'a', :sha, '[]', 1, 0.5, '{}', '{}', :champion, '2026-09-01', :promoted)"),
                    {"id": number, "sha": str(number) * 64, "champion": champion, "promoted": promoted})
        upgrade()
        with db.engine.connect() as connection:
            statuses = dict(connection.execute(text("SELECT id, status FROM model_versions")).all())
        assert statuses == {1: "champion", 2: "retired", 3: "candidate"}
        db.engine.dispose()
