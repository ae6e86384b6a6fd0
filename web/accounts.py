"""Dashboard accounts: sessions (Flask-Login), CSRF protection on every form (Flask-WTF), and the
`melanoma users` commands. The API keeps its keys and needs no CSRF token: it sends no cookies."""

import functools
import secrets
import sys

import click
from flask import Flask, g
from flask.cli import with_appcontext
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from werkzeug.security import generate_password_hash

from models import AuditEvent, Hospital, Role, User, db, utcnow

csrf = CSRFProtect()
login_manager = LoginManager()
DEMO_ADMIN = "admin@demo.hospital"


def init_app(app: Flask) -> None:
    csrf.init_app(app)
    csrf.exempt(app.blueprints["api"])
    login_manager.init_app(app)
    app.before_request(_forget_cached_user)


def _forget_cached_user() -> None:
    """Flask-Login caches the user, and Flask-WTF the CSRF token, on `g`, which lives as long as the app context:
    where one context serves several requests (as in the tests), each must still read its own session's."""
    g.pop("_login_user", None)
    g.pop("csrf_token", None)


@login_manager.user_loader
def _load_user(session_id: str) -> User | None:
    user_id, _, _ = session_id.partition(":")
    user = db.session.get(User, int(user_id)) if user_id.isdigit() and len(user_id) < 10 else None
    if user is None or not user.active or not secrets.compare_digest(user.session_id, session_id):
        return None
    return user


def authenticate(email: str, password: str) -> User | None:
    """The active user with this email and password; the same time is spent when no such user exists."""
    user = User.by_email(email)
    if user is None:
        User(password_hash=_dummy_hash()).check_password(password)
        return None
    if not user.check_password(password) or not user.active:
        return None
    user.last_login_at = utcnow()
    return user


@functools.cache
def _dummy_hash() -> str:
    """A hash to check against when the email is unknown, so a wrong email takes as long as a wrong password."""
    return generate_password_hash(secrets.token_hex(16), method="scrypt")


def create_user(email: str, password: str, role: str, hospital_names: list[str], actor: str) -> User:
    if role not in Role.ALL:
        raise ValueError(f"unknown role {role!r}; use {' or '.join(Role.ALL)}")
    email = User.normal_email(email)
    if "@" not in email or len(email) > 254:
        raise ValueError(f"{email!r} is not an email address")
    if User.by_email(email):
        raise ValueError(f"a user {email} exists already")
    hospitals = []
    for name in hospital_names:
        hospital = db.session.scalar(db.select(Hospital).where(Hospital.name == name))
        if hospital is None:
            raise ValueError(f"no hospital named {name!r} (`melanoma hospitals create` makes one)")
        hospitals.append(hospital)
    if role == Role.DERMATOLOGIST and not hospitals:
        raise ValueError("a dermatologist sees only the hospitals they are assigned to: name one with --hospital")
    user = User(email=email, role=role, hospitals=hospitals)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    AuditEvent.record(actor, "user.created", f"user:{user.id}", email=email, role=role,
                      hospitals=[hospital.name for hospital in hospitals])
    db.session.commit()
    return user


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@click.group()
def users():
    """Dashboard accounts: dermatologists (their hospitals only) and admins."""


@users.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(Role.ALL), required=True)
@click.option("--hospital", "hospital_names", multiple=True, help="A hospital the user sees (repeat for more).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@with_appcontext
def create_command(email, role, hospital_names, password_stdin):
    """Create a user; the password comes from a prompt (or standard input with --password-stdin)."""
    try:
        user = create_user(email, _read_password(password_stdin), role, list(hospital_names), actor="cli")
    except ValueError as refused:
        raise click.ClickException(str(refused)) from None
    where = ", ".join(hospital.name for hospital in user.hospitals) or "every hospital"
    click.echo(f"Created {user.role} {user.email} (sees {where}); log in at /login")


@users.command("password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@with_appcontext
def password_command(email, password_stdin):
    """Set a user's password; the sessions signed in with the old one end."""
    user = User.by_email(email)
    if user is None:
        raise click.ClickException(f"no user {email}")
    try:
        user.set_password(_read_password(password_stdin))
    except ValueError as refused:
        raise click.ClickException(str(refused)) from None
    AuditEvent.record("cli", "user.password_set", f"user:{user.id}")
    db.session.commit()
    click.echo(f"password of {user.email} set")


@users.command("deactivate")
@click.argument("email")
@with_appcontext
def deactivate_command(email):
    """Stop a user from logging in; their sessions end at their next request."""
    user = User.by_email(email)
    if user is None:
        raise click.ClickException(f"no user {email}")
    user.active = False
    AuditEvent.record("cli", "user.deactivated", f"user:{user.id}")
    db.session.commit()
    click.echo(f"{user.email} deactivated")


@users.command("list")
@with_appcontext
def list_command():
    """Every user with their role, hospitals and last login."""
    for user in db.session.scalars(db.select(User).order_by(User.email)):
        where = ", ".join(hospital.name for hospital in user.hospitals) or ("every hospital" if user.is_admin else "-")
        last = f"{user.last_login_at:%Y-%m-%d %H:%M %Z}" if user.last_login_at else "never"
        click.echo(f"{user.email:40s} {user.role:14s} {'active' if user.active else 'deactivated':12s} "
                   f"last login {last:22s} {where}")


@users.command("demo")
@with_appcontext
def demo_command():
    """For `make run`: create the demo admin once and print its password; afterwards, say how to log in."""
    if User.by_email(DEMO_ADMIN):
        click.echo(f"Dashboard: log in as {DEMO_ADMIN} with the password printed when it was created "
                   f"(`melanoma users password {DEMO_ADMIN}` sets a new one)")
        return
    password = secrets.token_urlsafe(12)
    create_user(DEMO_ADMIN, password, Role.ADMIN, [], actor="cli")
    click.echo(f"Dashboard: log in as {DEMO_ADMIN} with the password {password} (shown only this once)")
