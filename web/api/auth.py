"""API key authentication: `X-API-Key: <key>` or `Authorization: Bearer <key>`."""

import functools

from flask import g, request

from models import ApiKey
from web.api.errors import ApiError


def presented_key() -> str | None:
    key = request.headers.get("X-API-Key", "").strip()
    if key:
        return key
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def require_api_key(view):
    """Reject the request unless it carries a valid key; sets g.hospital to the key's hospital."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        key = presented_key()
        if key is None:
            raise ApiError(401, "missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'")
        hospital = ApiKey.find_hospital(key)
        if hospital is None:
            raise ApiError(401, "unknown or revoked API key")
        g.hospital = hospital
        return view(*args, **kwargs)

    return wrapped
