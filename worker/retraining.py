"""`melanoma retrain` and `melanoma rescore`: the operators' side of the learning loop (worker/tasks.py runs
it, worker/gate.py decides)."""

import time

import click
from flask import current_app
from flask.cli import with_appcontext

from worker.cli import cell

WORKER_GRACE_SECONDS = 60


def _progress_line(progress: dict) -> str:
    if progress["stage"] != "training" or not progress.get("epoch"):
        return progress["stage"]
    figures = ", ".join(f"{name} {value:.3f}" for name, value in sorted(progress.get("figures", {}).items()))
    return f"epoch {progress['epoch']}/{progress['epochs']}" + (f": {figures}" if figures else "")


@click.command()
@click.option("--now", is_flag=True, help="Queue a retraining for the training worker now.")
@click.option("--wait", is_flag=True, help="Print its progress until it ends, then the new version and the verdict.")
@click.option("--status", is_flag=True, help="Print how far the running (or the last) retraining got.")
@with_appcontext
def retrain(now: bool, wait: bool, status: bool):
    """Retrain on RETRAIN_DATA_DIRS plus the hospitals' confirmed images, as the schedule does; the gate then
    promotes the new model or rejects it (or leaves it a candidate where it has nothing to compare it on)."""
    from web.queue import RETRAIN, TRAINING_QUEUE, consumers, retrain_progress

    config = current_app.config
    if status:
        progress = retrain_progress(current_app)
        if progress is None:
            raise click.ClickException("no retraining has reported in the last week")
        click.echo(f"retraining {progress['task']} (started {progress['started_at']}): "
                   + _progress_line(progress) + "".join(f", {key} {progress[key]}" for key in
                                                        ("model", "verdict", "error") if progress.get(key)))
        return
    if not now:
        folders = ", ".join(config["RETRAIN_DATA_DIRS"])
        schedule = (f"beat retrains on {folders} on the schedule {config['RETRAIN_SCHEDULE']!r} (UTC)" if folders
                    else "no retraining is scheduled: RETRAIN_DATA_DIRS is not set")
        raise click.UsageError(f"{schedule}; `melanoma retrain --now [--wait]` starts one now")
    if not config["RETRAIN_DATA_DIRS"]:
        raise click.ClickException("RETRAIN_DATA_DIRS is not set; point it at folders of class folders "
                                   "(comma-separated)")
    celery_app = current_app.extensions["celery"]
    result = celery_app.send_task(RETRAIN, queue=TRAINING_QUEUE, ignore_result=False)
    click.echo(f"retraining queued (task {result.id}) for the training worker")
    # A worker that is starting answers within a minute; --wait never waits on a queue nobody reads.
    deadline = time.monotonic() + (WORKER_GRACE_SECONDS if wait else 0)
    while not consumers(celery_app, TRAINING_QUEUE):
        if time.monotonic() >= deadline:
            message = (f"no worker consumes the {TRAINING_QUEUE!r} queue now; the retraining runs when one starts "
                       f"(`celery -A worker worker --queues {TRAINING_QUEUE}`, or `melanoma serve`)")
            if wait:
                raise click.ClickException(message)
            click.echo(message)
            break
        time.sleep(2)
    if not wait:
        return
    shown = None
    while not result.ready():
        progress = retrain_progress(current_app)
        if progress and progress["task"] == result.id and _progress_line(progress) != shown:
            shown = _progress_line(progress)
            click.echo(shown)
        time.sleep(2)
    outcome = result.get(propagate=False)
    if result.failed():
        raise click.ClickException(f"the retraining failed: {outcome!r}")
    if outcome is None:
        raise click.ClickException("skipped: another retraining is running")
    _print_outcome(outcome)


def _print_outcome(version_id: int) -> None:
    from models import AuditEvent, ModelVersion, db

    db.session.expire_all()
    version = db.session.get(ModelVersion, version_id)
    card = version.card or {}
    test = card.get("metrics", {}).get("test", {})
    seconds = card.get("training", {}).get("seconds", 0)
    click.echo(f"model {version.id} {version.label} registered, trained in {seconds:.0f} s: "
               f"test melanoma AUC {cell(test.get('melanoma_auc'), 0)}, "
               f"balanced accuracy {cell(test.get('balanced_accuracy'), 0)}")
    verdict = db.session.scalars(db.select(AuditEvent).where(
        AuditEvent.target == f"model:{version.id}", AuditEvent.action.in_(("model.compared", "model.not_compared")))
        .order_by(AuditEvent.id.desc())).first()
    if verdict is None:
        click.echo("not compared: there was no champion")
    elif verdict.action == "model.compared":
        passes = verdict.details["passes_shipping_rule"]
        failures = "; ".join(verdict.details["failures"])
        click.echo("against the champion: " + ("passes the shipping rule" if passes
                                                else f"does not pass the shipping rule: {failures}"))
    gate = card.get("gate")
    if gate:
        for name, figures in gate["hospitals"].items():
            champion_auc, challenger_auc = (figures[role]["melanoma AUC"] for role in ("champion", "challenger"))
            click.echo(f"  {name}: {figures['images']} held-back images, {figures['melanomas']} melanomas; "
                       f"melanoma AUC {cell(champion_auc, 0)} -> {cell(challenger_auc, 0)}")
        reasons = "; ".join(gate["reasons"])
        click.echo(f"gate: {gate['verdict']}" + (f" ({reasons})" if reasons else ""))


@click.command()
@click.option("--open-alerts", is_flag=True, help="Every open alert raised by a model other than the champion.")
@click.option("--held-back", is_flag=True,
              help="The hospitals' held-back confirmed images the champion has not scored (their reliability).")
@click.option("--wait", is_flag=True, help="Wait for the inference workers, then print what changed.")
@with_appcontext
def rescore(open_alerts: bool, held_back: bool, wait: bool):
    """Score again, with the champion, the pictures of open alerts raised by earlier models (after a promotion).
    Their earlier predictions stay; each alert takes the champion's score, and one it scores under its threshold
    is dismissed (the audit trail keeps the earlier figures)."""
    from models import Alert, ModelVersion, Prediction, db
    from models.prediction import AlertStatus
    from web.queue import RESCORE_ALERTS, SCORE_IMAGES, send_chunks
    from web.reliability import held_back_pictures

    if not (open_alerts or held_back):
        raise click.UsageError("say what to re-score: --open-alerts, --held-back or both")
    champion = ModelVersion.champion()
    if champion is None:
        raise click.ClickException("no model serves yet")
    results = {}
    if held_back:
        scored = set(db.session.scalars(db.select(Prediction.image_id).where(
            Prediction.model_version_id == champion.id)))
        ids = [image.id for image, _ in held_back_pictures() if image.id not in scored]
        results["held-back images"] = send_chunks(current_app, SCORE_IMAGES, ids, keep_results=wait)
        click.echo(f"{len(ids)} held-back confirmed images queued to be scored by {champion.label}")
    if open_alerts:
        ids = list(db.session.scalars(db.select(Alert.id).join(Prediction).where(
            Alert.status == AlertStatus.OPEN, Prediction.model_version_id != champion.id).order_by(Alert.id)))
        results["open alerts"] = send_chunks(current_app, RESCORE_ALERTS, ids, keep_results=wait)
        click.echo(f"{len(ids)} open alerts queued to be re-scored by {champion.label}")
    if not wait:
        return
    for what, sent in results.items():
        totals: dict[str, int] = {}
        for result in sent:
            for key, value in result.get(timeout=None, interval=1).items():
                totals[key] = totals.get(key, 0) + value
        click.echo(f"{what}: " + ", ".join(f"{key} {value}" for key, value in sorted(totals.items())))
