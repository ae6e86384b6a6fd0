"""Log in and out. A failed login answers 401, which the rate limit on the dashboard counts (web/limits.py)."""

from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, session, url_for
from flask_login import login_user, logout_user

from models import AuditEvent, db
from web.accounts import authenticate
from web.dashboard import actor, bp


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never send a user who just logged in elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
        return url_for("dashboard.worklist")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    user = authenticate(request.form.get("email", ""), request.form.get("password", ""))
    if user is None:
        db.session.rollback()
        return render_template("login.html", next=request.form.get("next", ""), email=request.form.get("email", ""),
                               error="Wrong email or password."), 401
    session.clear()
    session.permanent = True  # ends after SESSION_HOURS (PERMANENT_SESSION_LIFETIME)
    login_user(user)
    AuditEvent.record(actor(), "user.logged_in", f"user:{user.id}")
    db.session.commit()
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    AuditEvent.record(actor(), "user.logged_out", "session")
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("dashboard.login"))
