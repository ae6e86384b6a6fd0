"""Liveness (/healthz), readiness (/readyz), and what every request answers while a dependency is down:
503 with Retry-After and the reason, in JSON under /api/, never a 500."""

import logging

import redis
from flask import Flask, current_app, jsonify, request
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError

from models import db
from web.queue import INFERENCE_QUEUE, consumers

log = logging.getLogger(__name__)

# A database restart or failover takes seconds; clients are asked to come back after this.
RETRY_AFTER_SECONDS = 10
DATABASE_DOWN = (OperationalError, InterfaceError)
BROKER_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, BrokerError)


def init_app(app: Flask) -> None:
    app.add_url_rule("/healthz", "healthz", healthz)
    app.add_url_rule("/readyz", "readyz", readyz)
    for error in DATABASE_DOWN:
        app.register_error_handler(error, _database_down)
    for error in BROKER_DOWN:
        app.register_error_handler(error, _broker_down)


def healthz():
    """The process answers: nothing else is checked, so a dependency's outage never restarts the web."""
    return {"status": "ok"}


def readyz():
    """Whether this instance can do its job now: the database answers, Redis answers, and at least one
    worker consumes the inference queue. 503 with the failing checks otherwise."""
    checks = {"database": _check(_ping_database), "redis": _check(_ping_redis),
              "inference_worker": _check(_inference_worker)}
    ready = all(result == "ok" for result in checks.values())
    response = jsonify({"status": "ready" if ready else "unavailable", "checks": checks})
    if not ready:
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _check(probe) -> str:
    try:
        return probe() or "ok"
    except Exception as error:  # any failure of a probe is the answer, not a crash of the probe
        return f"{error.__class__.__name__}: {error}"[:300]


def _ping_database() -> None:
    db.session.execute(text("SELECT 1"))
    db.session.rollback()


def _ping_redis() -> None:
    redis.Redis.from_url(current_app.config["REDIS_URL"], socket_timeout=2, socket_connect_timeout=2).ping()


def _inference_worker() -> str | None:
    consuming = consumers(current_app.extensions["celery"], INFERENCE_QUEUE)
    return None if consuming else f"no worker is consuming the {INFERENCE_QUEUE!r} queue"


def _database_down(error):
    log.warning("database unavailable for %s %s: %s", request.method, request.path, error.__class__.__name__)
    try:
        db.session.rollback()
    except DATABASE_DOWN:
        pass
    return _unavailable("the database is unavailable; nothing was changed by this request, try again shortly")


def _broker_down(error):
    log.warning("Redis unavailable for %s %s: %s", request.method, request.path, error.__class__.__name__)
    return _unavailable("the queue (Redis) is unavailable; try again shortly")


def _unavailable(reason: str):
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if request.path.startswith("/api/"):
        response = jsonify({"error": reason, "status": 503})
        response.status_code = 503
        response.headers.update(headers)
        return response
    return reason, 503, headers
