"""Rate limits (Flask-Limiter, counted in Redis so every web process shares them): failed authentication
per client and per key prefix, and uploads and reads per API key. A limit reached answers 429 with
Retry-After (JSON under /api/). With Redis down the counts fall back to each process's memory."""

import hashlib

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from web.api.auth import presented_key


def init_app(app: Flask) -> Limiter:
    limiter = Limiter(key_func=get_remote_address, storage_uri=app.config["REDIS_URL"],
                      storage_options={"socket_timeout": 1, "socket_connect_timeout": 1},
                      in_memory_fallback_enabled=True, headers_enabled=True,
                      key_prefix=app.config["RATELIMIT_KEY_PREFIX"])
    limiter.init_app(app)
    wait = "too many failed logins or unknown API keys; wait for Retry-After seconds before trying again"
    for scope, key_func in (("auth-failures-client", get_remote_address), ("auth-failures-key", _key_prefix)):
        limiter.shared_limit(_setting("RATE_LIMIT_AUTH_FAILURES"), scope=scope, key_func=key_func,
                             deduct_when=_refused, error_message=wait)(app.blueprints["api"])
    limiter.shared_limit(_setting("RATE_LIMIT_AUTH_FAILURES"), scope="dashboard-auth-failures",
                         key_func=get_remote_address, deduct_when=_refused, error_message=wait)(
        app.blueprints["dashboard"])
    limiter.shared_limit(_setting("RATE_LIMIT_UPLOADS"), scope="uploads", key_func=_key_id, methods=["POST"],
                         error_message="too many uploads with this API key; wait for Retry-After seconds")(
        app.blueprints["api"])
    limiter.shared_limit(_setting("RATE_LIMIT_READS"), scope="reads", key_func=_key_id, methods=["GET"],
                         error_message="too many requests with this API key; poll less often (Retry-After "
                                       "says when to come back)")(app.blueprints["api"])
    return limiter


def _setting(name: str):
    return lambda: current_app.config[name]


def _refused(response: Response) -> bool:
    return response.status_code == 401


def _key_prefix() -> str:
    """The part of a key an operator sees in `melanoma keys list`: guesses at one key are counted together."""
    return (presented_key() or "none")[:10]


def _key_id() -> str:
    """One API key, by a hash (the key itself is never written to Redis)."""
    key = presented_key()
    return hashlib.sha256(key.encode()).hexdigest()[:32] if key else f"client:{request.remote_addr}"
