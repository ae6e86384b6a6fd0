"""The `melanoma` command: the database, hospitals, serving and submitting.

The model commands (`models`, `predict`, `explain`, `evaluate`, `compare`, `audit`, `train`) live on the
worker side, in worker/cli.py, and join this group through the `flask.commands` entry points of
pyproject.toml, so the web imports nothing of the workers.
"""

import os
import sys
from pathlib import Path

import click
from flask.cli import FlaskGroup

from web import create_app
from web.accounts import users
from web.config import InsecureSettings


def _create_app():
    try:
        return create_app()
    except InsecureSettings as refused:
        raise click.ClickException(str(refused)) from None


# No default commands: Flask's generic run, shell and routes are not how this system runs.
@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False, add_version_option=False,
             help="Melanoma alert system. `melanoma db upgrade` migrates; `melanoma serve` runs everything.")
def cli():
    pass


# Nor Flask's --app, --env-file and --debug: the app is always web.create_app, configured by its settings.
cli.params = [param for param in cli.params if param.name not in ("app", "env_file", "debug")]


cli.add_command(users)


@cli.group()
def hospitals():
    """Hospitals and their API keys."""


@hospitals.command("create")
@click.argument("name")
def create_hospital(name: str):
    """Create a hospital; its new API key is printed alone on the last line (it is shown only once)."""
    from models import AuditEvent, Hospital, db

    if db.session.scalar(db.select(Hospital).where(Hospital.name == name)):
        raise click.ClickException(f"a hospital named {name!r} exists; use `melanoma hospitals new-key`")
    hospital = Hospital(name=name)
    db.session.add(hospital)
    key = hospital.issue_api_key()
    db.session.flush()
    AuditEvent.record("cli", "hospital.created", f"hospital:{hospital.id}", name=name)
    db.session.commit()
    click.echo(f"Created hospital {name!r} (id {hospital.id}). Its API key, shown only this once:")
    click.echo(key)


@hospitals.command("new-key")
@click.argument("name")
def new_key(name: str):
    """Issue another API key for an existing hospital (printed alone on the last line); as `keys create`."""
    click.echo(_issue_key(name))


@hospitals.command("reliability")
@click.argument("name")
def hospital_reliability(name: str):
    """How the serving model has done on NAME's held-back confirmed images: sensitivity and specificity at its
    threshold with 95 % intervals and counts, the shift of its recent images from the model's training images, and a
    warning where melanomas are missed beyond the target or the images lie far from the training images."""
    from models import Hospital, db
    from web.reliability import reliability

    hospital = db.session.scalar(db.select(Hospital).where(Hospital.name == name))
    if hospital is None:
        raise click.ClickException(f"no hospital named {name!r}")
    figures = reliability(hospital)
    if figures["model"] is None:
        raise click.ClickException("no model has served yet: the first classified image registers the shipped one")

    def share(name: str, count: str) -> str:
        if figures[name] is None:
            return f"{name} not measured (no {count.replace('_', ' ')} scored)"
        low, high = figures[f"{name}_interval_95"]
        return f"{name} {figures[name]:.3f} (95 % {low:.3f}-{high:.3f}, {figures[count]} {count.replace('_', ' ')})"

    click.echo(f"{name}: {figures['held_back_images']} held-back confirmed images, "
               f"{figures['scored_by_this_model']} scored by {figures['model']} (threshold "
               f"{figures['alert_threshold']:.4f}); {share('sensitivity', 'melanomas')}; "
               f"{share('specificity', 'other_lesions')}")
    shift = figures["shift"]
    click.echo(f"shift {shift['auc']:.3f} on its {shift['images']} newest pictures (measured {shift['measured_at']}; "
               f"0.5: like the training images, {shift['limit']:.2f} or more: far from them)" if shift
               else "shift not measured yet by this model (hourly, once the hospital has 50 classified pictures)")
    if figures["warning"]:
        click.echo(figures["warning"])


@cli.group()
def keys():
    """API keys: issue, list and revoke them."""


@keys.command("create")
@click.argument("hospital")
def create_key(hospital: str):
    """Issue an API key for HOSPITAL, printed alone on the last line (it is shown only this once)."""
    click.echo(_issue_key(hospital))


def _issue_key(name: str) -> str:
    from models import AuditEvent, Hospital, db

    hospital = db.session.scalar(db.select(Hospital).where(Hospital.name == name))
    if hospital is None:
        raise click.ClickException(f"no hospital named {name!r}")
    key = hospital.issue_api_key()
    AuditEvent.record("cli", "hospital.key_issued", f"hospital:{hospital.id}")
    db.session.commit()
    return key


@keys.command("list")
@click.argument("hospital", required=False)
def list_keys(hospital: str | None):
    """Every key (of HOSPITAL, if given) by its prefix, with when it was issued and revoked."""
    from models import ApiKey, Hospital, db

    query = db.select(ApiKey, Hospital.name).join(Hospital).order_by(Hospital.name, ApiKey.id)
    if hospital is not None:
        query = query.where(Hospital.name == hospital)
    for key, name in db.session.execute(query):
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        click.echo(f"{key.prefix:12s} {name:30s} issued {key.created_at:%Y-%m-%d %H:%M}  {state}")


@keys.command("revoke")
@click.argument("prefix_or_key")
def revoke_key(prefix_or_key: str):
    """Revoke a key, named by its listed prefix or given whole; it is refused from the next request on."""
    from models import ApiKey, AuditEvent, db, utcnow
    from models.hospital import hash_api_key

    matches = db.session.scalars(db.select(ApiKey).where(
        db.or_(ApiKey.key_hash == hash_api_key(prefix_or_key), ApiKey.prefix == prefix_or_key),
        ApiKey.revoked_at.is_(None))).all()
    if not matches:
        raise click.ClickException(f"no active key {prefix_or_key!r}; see `melanoma keys list`")
    if len(matches) > 1:
        raise click.ClickException(f"{len(matches)} active keys have the prefix {prefix_or_key!r}; give the whole key")
    matches[0].revoked_at = utcnow()
    AuditEvent.record("cli", "hospital.key_revoked", f"hospital:{matches[0].hospital_id}", prefix=matches[0].prefix)
    db.session.commit()
    click.echo(f"key {matches[0].prefix} revoked")


@cli.command(with_appcontext=False)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--concurrency", default=1, show_default=True, type=int, help="Inference worker processes.")
def serve(host: str, port: int, concurrency: int):
    """Run web, an inference worker and beat on this machine until interrupted (Ctrl-C)."""
    from web.serve import free_port, plan_children, supervise

    app = _create_app()
    _require_migrated(app)
    env = dict(os.environ)
    redis_port = None
    if not os.environ.get("REDIS_URL"):
        redis_port = free_port()
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    instance_dir = Path(app.instance_path)
    click.echo(f"Serving on http://{host}:{port}/ (database {app.config['SQLALCHEMY_DATABASE_URI']}, "
               f"redis {env.get('REDIS_URL')}{' embedded' if redis_port else ''}). Ctrl-C stops.")
    supervise(plan_children(host, port, instance_dir, concurrency, redis_port), env)


def _require_migrated(app) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from flask_migrate import Migrate

    from models import db

    with app.app_context():
        migrate: Migrate = app.extensions["migrate"].migrate
        heads = set(ScriptDirectory.from_config(migrate.get_config()).get_heads())
        with db.engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    if current != heads:
        raise click.ClickException("the database is not at the latest migration: run `melanoma db upgrade` first")


@cli.command(with_appcontext=False)
@click.argument("paths", nargs=-1, required=True)
@click.option("--server", envvar="MELANOMA_SERVER", default="http://127.0.0.1:5000", show_default=True)
@click.option("--api-key", envvar="MELANOMA_API_KEY", default="", help="Or set MELANOMA_API_KEY.")
@click.option("--wait/--no-wait", default=False, help="Wait for the results, with a progress bar.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the results CSV here (implies --wait).")
@click.option("--idempotency-key", help="Reuse to make a retried upload return the same batch.")
@click.option("--stall-minutes", default=30.0, show_default=True, type=float,
              help="Stop waiting when no image has finished for this long (the batch stays on the server).")
@click.option("--references", type=click.Path(dir_okay=False),
              help="A CSV with columns file,patient,lesion: your codes for the patient and lesion of each picture "
                   "(file as sent: the path below the folder given).")
def submit(paths, server, api_key, wait, out, idempotency_key, stall_minutes, references):
    """Upload image files and folders (recursively) as one batch."""
    from web.client import Client, SubmitError, collect_uploads, read_references

    try:
        files = collect_uploads(list(paths))
        references = read_references(references, files) if references else None
        client = Client(server, api_key)
        batch = client.submit(files, idempotency_key=idempotency_key, references=references)
        click.echo(f"batch {batch['id']}: {batch['image_count']} images queued, {batch['url']}", err=True)
        if wait or out:
            batch = client.wait(batch, show_progress=sys.stderr.isatty(), stall_seconds=stall_minutes * 60)
            counts = batch["counts"]
            click.echo(f"batch {batch['id']} done: {counts['done']} classified, {counts['rejected']} rejected, "
                       f"{counts['failed']} failed, {counts['alerts']} melanoma alerts", err=True)
            if batch.get("reliability_warning"):
                click.echo(f"warning: {batch['reliability_warning']}", err=True)
            if out:
                Path(out).write_text(client.results_csv(batch))
                click.echo(f"results written to {out}", err=True)
    except SubmitError as error:
        raise click.ClickException(str(error)) from error
    click.echo(batch["id"])


if __name__ == "__main__":
    cli()
