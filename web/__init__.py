"""The Flask front end: hospitals' REST API and the dermatologists' pages."""

from pathlib import Path

from flask import Flask
from flask_migrate import Migrate

from models import db
from web import accounts, health, limits
from web.config import ROOT, Config, settle_secrets
from web.queue import celery_init_app

migrate = Migrate(directory=str(ROOT / "migrations"))


def create_app(config: dict | None = None) -> Flask:
    """Build the app; the database is never migrated here (run `melanoma db upgrade`)."""
    config = config or {}
    app = Flask(__name__, instance_path=str(config.get("INSTANCE_DIR", Config.INSTANCE_DIR)))
    app.config.from_object(Config)
    app.config.update(config)
    app.config["CELERY"] = {**Config.CELERY, **config.get("CELERY", {})}  # a setting given replaces its default
    app.config["INSTANCE_DIR"] = app.instance_path
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    settle_secrets(app.config)

    db.init_app(app)
    migrate.init_app(app, db)
    celery_init_app(app)
    with app.app_context():
        _tune_sqlite(db.engine)

    from web.api import bp as api_bp
    from web.dashboard import bp as dashboard_bp

    app.register_blueprint(api_bp, url_prefix="/api/v1")
    app.register_blueprint(dashboard_bp)
    accounts.init_app(app)
    health.init_app(app)
    limits.init_app(app)
    return app


def _tune_sqlite(engine) -> None:
    """SQLite is shared by the web and worker processes: WAL lets them read while one writes."""
    if engine.dialect.name != "sqlite":
        return
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _on_connect(connection, _record):
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
