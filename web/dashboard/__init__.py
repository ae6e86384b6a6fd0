"""Pages for dermatologists: open melanoma alerts first, then recent batches."""

from flask import Blueprint

bp = Blueprint("dashboard", __name__)

from web.dashboard import routes  # noqa: E402,F401
