"""Settings, read from the environment with defaults that run the whole system on one machine."""

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each shipped model has a directory of its own, never overwritten: databases keep pointing at the
# artifacts they registered, and a new default is registered beside the old one.
DEFAULT_MODEL_DIR = ROOT / "worker" / "classifier" / "weights" / "lite0-20261204-204925"


def resolve_path(stored: str) -> Path:
    """A model artifact's stored path (relative to the project when inside it) as a path on this machine."""
    path = Path(stored)
    return path if path.is_absolute() else ROOT / path


def _instance_dir() -> Path:
    return Path(os.environ.get("MELANOMA_INSTANCE", ROOT / "instance")).resolve()


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL", f"sqlite:///{_instance_dir() / 'melanoma.db'}")
    # Plain postgres URLs (as hosting providers hand them out) mean the psycopg 3 driver installed here.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _celery_settings(defaults: dict) -> dict:
    """Celery's settings: these defaults, each overridable by CELERY_<NAME> in the environment (a JSON value,
    or a plain string), e.g. CELERY_WORKER_PREFETCH_MULTIPLIER=4; any other Celery setting can be added so."""
    def parsed(value: str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value

    return defaults | {name.removeprefix("CELERY_").lower(): parsed(value) for name, value in os.environ.items()
                       if name.startswith("CELERY_")}


class Config:
    # Required outside the embedded SQLite run, which makes its own (see settle_secrets).
    SECRET_KEY = os.environ.get("SECRET_KEY", "")
    # Dashboard sessions end this long after login; cookies are HttpOnly, SameSite=Lax, and Secure where
    # SESSION_COOKIE_SECURE=1 (behind HTTPS).
    PERMANENT_SESSION_LIFETIME = int(float(os.environ.get("SESSION_HOURS", "12")) * 3600)
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = os.environ.get("SESSION_COOKIE_SECURE", "0") == "1"
    # A form's CSRF token lives as long as its session (a page left open over lunch still posts).
    WTF_CSRF_TIME_LIMIT = None
    INSTANCE_DIR = _instance_dir()
    SQLALCHEMY_DATABASE_URI = _database_url()
    REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    STORAGE_DIR = os.environ.get("STORAGE_DIR", str(_instance_dir() / "images"))
    MODEL_DIR = os.environ.get("MODEL_DIR", str(DEFAULT_MODEL_DIR))
    MAX_CONTENT_LENGTH = int(os.environ.get("MAX_UPLOAD_MB", "2048")) * 1024 * 1024
    MAX_FILES_PER_BATCH = int(os.environ.get("MAX_FILES_PER_BATCH", "10000"))
    # Werkzeug refuses multipart bodies of more parts than this (default 1,000): allow a full batch.
    MAX_FORM_PARTS = MAX_FILES_PER_BATCH + 100
    MAX_FILE_MB = int(os.environ.get("MAX_FILE_MB", "50"))
    # What counts as a readable image, for the web's check of an upload and the workers' decoder alike. MPO is
    # how Pillow names the JPEGs many cameras write (a JPEG with a multi-picture index). Dermoscopic
    # photographs are at most a few tens of megapixels; larger claims are decompression bombs.
    IMAGE_FORMATS = frozenset({"JPEG", "PNG", "MPO"})
    MAX_IMAGE_PIXELS = int(float(os.environ.get("MAX_IMAGE_MEGAPIXELS", "80")) * 1_000_000)
    INFERENCE_CHUNK_SIZE = int(os.environ.get("INFERENCE_CHUNK_SIZE", "64"))
    # auto, litert or keras: see worker.classifier.predictor.RUNTIMES.
    INFERENCE_RUNTIME = os.environ.get("INFERENCE_RUNTIME", "auto")
    # Served models converted for LiteRT, kept under their artifact's hash so a restart does not convert again.
    MODEL_CACHE_DIR = os.environ.get("MODEL_CACHE_DIR", str(_instance_dir() / "model-cache"))
    # The sweep (every minute) queues again images waiting this long that no message in the broker carries
    # (a lost message, a Redis restart); the wait covers the moment between the web's commit and its send.
    REQUEUE_AFTER_SECONDS = int(os.environ.get("REQUEUE_AFTER_SECONDS", "60"))
    MAX_ATTEMPTS = int(os.environ.get("MAX_ATTEMPTS", "3"))
    # Rate limits (see web/limits.py), as Flask-Limiter reads them ("20 per minute", "5/second;100/hour").
    RATE_LIMIT_AUTH_FAILURES = os.environ.get("RATE_LIMIT_AUTH_FAILURES", "20 per minute")
    RATE_LIMIT_UPLOADS = os.environ.get("RATE_LIMIT_UPLOADS", "120 per minute")
    RATE_LIMIT_READS = os.environ.get("RATE_LIMIT_READS", "1200 per minute")
    RATELIMIT_KEY_PREFIX = "melanoma-limits"
    # Folders of class folders (comma-separated) that beat retrains on, together; none: no retraining.
    RETRAIN_DATA_DIRS = [folder.strip() for folder in os.environ.get("RETRAIN_DATA_DIRS", "").split(",")
                         if folder.strip()]
    # The share (percent) of each hospital's confirmed images held back from training as its evaluation set,
    # chosen by image hash, so an image stays on its side across retrainings.
    HOLDBACK_PERCENT = int(os.environ.get("HOLDBACK_PERCENT", "20"))
    # How many times a confirmed image counts against a base image of its class, in retraining.
    CONFIRMED_IMAGE_WEIGHT = int(os.environ.get("CONFIRMED_IMAGE_WEIGHT", "3"))
    # The gate refuses a retrained model that loses on a hospital with at least this many held-back melanomas.
    GATE_MIN_MELANOMAS = int(os.environ.get("GATE_MIN_MELANOMAS", "10"))
    # When beat retrains: a cron expression in UTC (minute hour day-of-month month day-of-week; the default is
    # Sundays at 03:00), or a number of hours between runs.
    RETRAIN_SCHEDULE = os.environ.get("RETRAIN_SCHEDULE", "0 3 * * 0")
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    # Celery's settings (broker and result backend are REDIS_URL; queues and routes follow the task names in
    # web/queue.py). Override one with CELERY_<NAME>, or with {"CELERY": {...}} given to create_app.
    CELERY = _celery_settings({
        "result_expires": 3600,
        "task_ignore_result": True,
        # A task is acknowledged only after it ran; a worker killed mid-task gives it back to the queue.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # How long the master waits for a new pool process to report itself up before killing it (Celery's
        # default is 4 s); the model loads after that report, so this is only a margin for a busy machine.
        "worker_proc_alive_timeout": 60,
        # Longer than any acks_late task may run (inference tasks stop at 11 minutes).
        "broker_transport_options": {"visibility_timeout": 3600},
        "broker_connection_retry_on_startup": True,
        "timezone": "UTC",
    })


# Values that have shipped as examples or defaults. Outside the embedded run, a secret that is one of them,
# or shorter than MIN_SECRET_LENGTH, refuses to start.
KNOWN_DEFAULT_SECRETS = frozenset({"dev-only-change-me", "change-me", "changeme", "secret", "melanoma", "password"})
MIN_SECRET_LENGTH = 16
SECRET_FILE = "secret_key"


class InsecureSettings(RuntimeError):
    """A production start with a missing or default secret."""


def settle_secrets(config: dict) -> None:
    """The embedded run (a SQLite database) makes a random SECRET_KEY once and keeps it in the instance folder.
    On any other database, a missing or known SECRET_KEY, or a database password that is a known default,
    stops the start with what to set."""
    from sqlalchemy.engine import make_url

    url = make_url(config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "sqlite":
        if not config.get("SECRET_KEY"):
            config["SECRET_KEY"] = _instance_secret(Path(config["INSTANCE_DIR"]) / SECRET_FILE)
        return
    secret = config.get("SECRET_KEY") or ""
    if not secret or secret in KNOWN_DEFAULT_SECRETS or len(secret) < MIN_SECRET_LENGTH:
        problem = "is not set" if not secret else "is a known default" if secret in KNOWN_DEFAULT_SECRETS \
            else f"is shorter than {MIN_SECRET_LENGTH} characters"
        raise InsecureSettings(
            f"refusing to start: SECRET_KEY {problem}. Outside the embedded SQLite run set it to a long random "
            "value, for instance: echo \"SECRET_KEY=$(openssl rand -hex 32)\" >> .env")
    if url.password is not None and url.password in KNOWN_DEFAULT_SECRETS:
        raise InsecureSettings(
            "refusing to start: the database password in DATABASE_URL is a known default. Set POSTGRES_PASSWORD "
            "(docker-compose) or DATABASE_URL to a password of your own")


def _instance_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of the same run wrote it first
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as out:
        out.write(secret)
    return secret
