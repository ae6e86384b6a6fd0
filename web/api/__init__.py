"""The hospitals' REST API (/api/v1), authenticated by one API key per hospital."""

from flask import Blueprint

bp = Blueprint("api", __name__)

from web.api import diagnoses, errors, reliability, routes  # noqa: E402,F401  (registers the handlers on bp)
