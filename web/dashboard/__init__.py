"""Pages for dermatologists: open melanoma alerts first, then recent batches.

Behind HTTP basic authentication (DASHBOARD_USER / DASHBOARD_PASSWORD) until the dashboard issue brings
per-user accounts: the pages show every hospital's alerts. Without a password set, they stay closed.
"""

import hmac

from flask import Blueprint, current_app, request

bp = Blueprint("dashboard", __name__)


@bp.before_request
def _require_login():
    password = current_app.config["DASHBOARD_PASSWORD"]
    if not password:
        return "The dashboard is closed: set DASHBOARD_PASSWORD (melanoma serve sets one and prints it).", 503
    auth = request.authorization
    if (auth is None or not hmac.compare_digest(auth.username or "", current_app.config["DASHBOARD_USER"])
            or not hmac.compare_digest(auth.password or "", password)):
        return "Log in with the dashboard user and password.", 401, {
            "WWW-Authenticate": 'Basic realm="melanoma alerts"'}
    return None


from web.dashboard import routes  # noqa: E402,F401
