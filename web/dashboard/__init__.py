"""The dermatologists' workspace: the worklist of alerts, alert and image pages, batches, and (for admins)
models and operations. Every page needs a signed-in user (web/accounts.py); a dermatologist sees only the
hospitals they are assigned to, and another hospital's alert, image or batch is a 404, as if it did not exist.
"""

import datetime as dt
import functools

from flask import Blueprint, abort, redirect, request, url_for
from flask_login import current_user

from models.base import MAX_ID, db

bp = Blueprint("dashboard", __name__)
PUBLIC_ENDPOINTS = {"dashboard.login"}


@bp.before_request
def _require_login():
    if request.endpoint in PUBLIC_ENDPOINTS or current_user.is_authenticated:
        return None
    if request.method == "GET" and request.accept_mimetypes.accept_html:
        return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
    return "Log in first, at /login.", 401


def admin_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            abort(403, "admins only")
        return view(*args, **kwargs)

    return wrapped


def visible(column):
    """A condition on a hospital_id column: the rows the signed-in user may see."""
    allowed = current_user.hospital_ids()
    return db.true() if allowed is None else column.in_(allowed)


def own_or_404(record_class, record_id: int):
    """The record, if it exists and belongs to a hospital the user sees; else a 404."""
    record = db.session.get(record_class, record_id) if record_id <= MAX_ID else None
    if record is None or not current_user.may_see(record.hospital_id):
        abort(404)
    return record


def actor() -> str:
    return f"user:{current_user.email}"


def _utc(value: dt.datetime) -> dt.datetime:
    """Stored in UTC; SQLite gives it back without a time zone."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@bp.app_template_filter("when")
def when(value: dt.datetime | None) -> str:
    """A timestamp with its time zone."""
    return "" if value is None else _utc(value).strftime("%Y-%m-%d %H:%M UTC")


@bp.app_template_filter("age")
def age(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    value = _utc(value)
    seconds = max(0, (dt.datetime.now(dt.UTC) - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


from web.dashboard import admin, auth, batches, media, worklist  # noqa: E402,F401
