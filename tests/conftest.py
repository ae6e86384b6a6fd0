"""Fixtures over the real services: PostgreSQL and SQLite databases migrated by Alembic, the real Redis,
and (for end-to-end tests) a real Celery worker process."""

import io
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
import requests
from flask_migrate import upgrade
from PIL import Image as PILImage
from sqlalchemy import text
from werkzeug.serving import make_server

from models import Hospital, db
from web import create_app

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MELANOMA_SHARED", ROOT.parent / "shared"))
DATA_DIR = SHARED / "datasets" / "isic-9class" / "Train"
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
# One Redis database per backend, so the two test workers never take each other's tasks; tests that run
# no worker queue into a third, where nothing consumes their messages behind their backs.
REDIS_DB = {"postgresql": 11, "sqlite": 12}
IDLE_REDIS_DB = 13
# A beat started by a test sends maintenance and shift tasks too: it gets a database of its own, so those never
# reach the session's workers, whose transactions would then race the test's table cleanup.
BEAT_REDIS_DB = 14
BACKENDS = ["postgresql", "sqlite"]
# Outside the embedded SQLite run the app refuses to start without a secret of its own.
TEST_SECRET = "test-secret-" + uuid.uuid4().hex
# The installed `melanoma` command, run with this interpreter.
MELANOMA_CLI = [sys.executable, "-m", "web.cli"]


def dataset_images(class_name: str, count: int) -> list[Path]:
    folder = DATA_DIR / class_name
    if not folder.is_dir():
        pytest.fail(f"the shared dataset is missing: {folder} (set MELANOMA_SHARED to the shared folder)")
    return sorted(folder.iterdir())[:count]


def make_png(width: int = 64, height: int = 48, colour=(180, 120, 90)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def make_hospital(name: str | None = None) -> tuple[Hospital, str]:
    hospital = Hospital(name=name or f"hospital-{uuid.uuid4().hex[:8]}")
    db.session.add(hospital)
    key = hospital.issue_api_key()
    db.session.commit()
    return hospital, key


@pytest.fixture(scope="session")
def postgres_url():
    name = f"melanoma_test_{os.getpid()}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def backend_settings(postgres_url, tmp_path_factory):
    """Per backend: a migrated database, an empty Redis database and a storage folder, shared by the
    test process and the worker process."""
    settings = {}
    redis.Redis.from_url(f"{REDIS_BASE_URL}/{IDLE_REDIS_DB}").flushdb()
    for backend in BACKENDS:
        home = tmp_path_factory.mktemp(backend)
        url = postgres_url if backend == "postgresql" else f"sqlite:///{home / 'melanoma.db'}"
        redis_url = f"{REDIS_BASE_URL}/{REDIS_DB[backend]}"
        redis.Redis.from_url(redis_url).flushdb()
        settings[backend] = {
            "SECRET_KEY": TEST_SECRET,
            "SQLALCHEMY_DATABASE_URI": url,
            "REDIS_URL": redis_url,
            "STORAGE_DIR": str(home / "images"),
            "INSTANCE_DIR": str(home),
            "REQUEUE_AFTER_SECONDS": 600,
        }
        app = create_app({**settings[backend], "TESTING": True})
        with app.app_context():
            upgrade()
            db.engine.dispose()
    return settings


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def app(request, backend, backend_settings):
    # Rate-limit counts of their own, so one test's failed logins never throttle the next test.
    settings = {**backend_settings[backend], "TESTING": True, "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
    if "worker" not in request.fixturenames:
        settings["REDIS_URL"] = f"{REDIS_BASE_URL}/{IDLE_REDIS_DB}"
    app = create_app(settings)
    with app.app_context():
        yield app
        db.session.remove()
        empty_tables()
        db.engine.dispose()


def empty_tables() -> None:
    tables = [table.name for table in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def live_server(app):
    """The app on a real HTTP port (a threaded werkzeug server), for clients that speak HTTP."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def hospital(app):
    return make_hospital("St Example")


def worker_env(settings: dict) -> dict:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": settings["SQLALCHEMY_DATABASE_URI"],
        "REDIS_URL": settings["REDIS_URL"],
        "STORAGE_DIR": settings["STORAGE_DIR"],
        "MELANOMA_INSTANCE": settings["INSTANCE_DIR"],
        "SECRET_KEY": settings.get("SECRET_KEY", TEST_SECRET),
        "PYTHONUNBUFFERED": "1",
    })
    return env


class WorkerProcess:
    """A real `celery -A worker worker` process on the test's database and Redis."""

    def __init__(self, settings: dict, log_path: Path, queues: str = "inference,explain,maintenance",
                 env: dict | None = None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel", "INFO",
             "--queues", queues, "--concurrency", "1", "--hostname", f"test-{uuid.uuid4().hex[:6]}@%h"],
            cwd=ROOT, env={**worker_env(settings), **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="session")
def workers(backend_settings, tmp_path_factory):
    started: dict[str, WorkerProcess] = {}

    def get(backend: str) -> WorkerProcess:
        if backend not in started:
            log = tmp_path_factory.mktemp("logs") / f"worker-{backend}.log"
            started[backend] = WorkerProcess(backend_settings[backend], log)
        return started[backend]

    yield get
    for worker in started.values():
        worker.stop()


@pytest.fixture
def worker(backend, workers):
    return workers(backend)


def wait_for_batch(server: str, batch_id: int, headers: dict, worker: WorkerProcess, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(f"{server}/api/v1/batches/{batch_id}", headers=headers, timeout=30).json()
        if body["status"] == "done":
            return body
        if worker.process.poll() is not None:
            pytest.fail(f"the worker exited with {worker.process.returncode}:\n{worker.output()[-5000:]}")
        time.sleep(0.5)
    pytest.fail(f"batch {batch_id} not done after {timeout:.0f} s: {body}\nworker log:\n{worker.output()[-5000:]}")


PASSWORD = "a-long-enough-password"


def make_user(email: str, role: str = "dermatologist", hospitals: list | None = None) -> "User":  # noqa: F821
    from web.accounts import create_user

    return create_user(email, PASSWORD, role, [hospital.name for hospital in hospitals or []], actor="test")


def csrf_token(html: str) -> str:
    import re

    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def log_in(client, email: str, password: str = PASSWORD):
    """Log the Flask test client in through the login form, CSRF token and all."""
    token = csrf_token(client.get("/login").text)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})
