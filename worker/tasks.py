"""Celery tasks. Each takes ids, has a name, a time limit and a queue, and is safe to run twice.

Each runs inside an app context of its own (web/queue.py's FlaskTask); Flask-SQLAlchemy removes the task's
database session when that context ends, however the task ended.
"""

import contextlib
import datetime as dt
import json
import logging
import random
import shutil
import threading
import time
from pathlib import Path

import redis
from celery import shared_task
from celery.signals import worker_process_init
from flask import current_app

from models import Alert, AuditEvent, Image, db, utcnow
from models.batch import ImageStatus
from web.queue import (
    CLASSIFY_IMAGES,
    EXPLAIN_ALERT,
    EXPLAIN_QUEUE,
    INFERENCE_QUEUE,
    MEASURE_SHIFT,
    REQUEUE_STALE,
    RESCORE_ALERTS,
    RETRAIN,
    SCORE_IMAGES,
    report_retrain_progress,
    send_classify,
    task_args_in_broker,
)
from worker import inference
from worker.shift import measure_shifts

log = logging.getLogger(__name__)

OUTAGES = inference.OUTAGES
# With the countdown capped at 30 s, about half an hour of tries.
OUTAGE_RETRIES = 60
RETRAIN_TIME_LIMIT = 4 * 3600
PARTIAL = ".partial"  # the name a model folder has while it is being trained
RETRAIN_LOCK = "melanoma:retrain-lock"
RETRAIN_LOCK_SECONDS = 120


@worker_process_init.connect
def _load_model_after_fork(**_kwargs):
    """Each pool process gets its own database connections and its own copy of the model. The model loads in
    the background: the master kills a pool process that has not reported itself up within
    worker_proc_alive_timeout, and loading TensorFlow and the model takes longer than that on a busy machine,
    so a replacement for a crashed process would be killed again and again. A task arriving first waits for
    the load (serving_model holds a lock)."""
    from worker.celery import flask_app

    with flask_app.app_context():
        db.engine.dispose(close=False)
    threading.Thread(target=_warm_up, args=(flask_app,), name="load-model", daemon=True).start()


def _warm_up(flask_app) -> None:
    from worker.serving import serving_model

    with flask_app.app_context():
        try:
            serving_model()
        except Exception:  # a broken model must not stop the process; tasks record the error per image
            log.exception("could not load the serving model at start-up")


def _outage_countdown(retries: int) -> float:
    """1, 2, 4 ... up to 30 s, with jitter, so workers do not all come back in the same instant."""
    return min(30.0, 2.0 ** retries) * random.uniform(0.5, 1.0)


@shared_task(name=CLASSIFY_IMAGES, bind=True, time_limit=660, soft_time_limit=600, max_retries=5)
def classify_images(self, image_ids: list[int]) -> dict:
    try:
        return inference.classify_images(image_ids, current_app.config["MAX_ATTEMPTS"])
    except OUTAGES as error:
        # The database went away (a restart, a failover): nothing is wrong with the images, so nothing is
        # recorded on them; the task comes back until the database does (about half an hour of tries; after
        # that the sweep sends the images again).
        _forget_session()
        log.warning("the database is unreachable (%s); retrying images %s", error.__class__.__name__, image_ids)
        raise self.retry(countdown=_outage_countdown(self.request.retries), max_retries=OUTAGE_RETRIES) from error
    except inference.RetryImages as failed:
        # The chunk's other images are classified; these failed on their own, and their reasons are recorded.
        raise self.retry(args=[failed.image_ids], countdown=min(60, 5 * 2 ** self.request.retries)) from failed
    except Exception as error:
        db.session.rollback()
        log.exception("inference failed for images %s", image_ids)
        retry = inference.record_failure(image_ids, f"inference failed: {error!r}",
                                         current_app.config["MAX_ATTEMPTS"])
        if retry:
            raise self.retry(args=[retry], countdown=min(60, 5 * 2 ** self.request.retries)) from error
        return {"failed": len(image_ids)}


def _through_outages(task, work, *args):
    """work(*args), the task coming back (about half an hour of tries) while the database is away."""
    try:
        return work(*args)
    except OUTAGES as error:
        _forget_session()
        raise task.retry(countdown=_outage_countdown(task.request.retries), max_retries=OUTAGE_RETRIES) from error


@shared_task(name=EXPLAIN_ALERT, bind=True, time_limit=300, max_retries=3, autoretry_for=(OSError,),
             retry_backoff=True)
def explain_alert(self, alert_id: int) -> str | None:
    return _through_outages(self, inference.explain_alert, alert_id, current_app.config["MAX_ATTEMPTS"])


@shared_task(name=RESCORE_ALERTS, bind=True, time_limit=660, soft_time_limit=600, max_retries=5)
def rescore_alerts(self, alert_ids: list[int]) -> dict:
    return _through_outages(self, inference.rescore_alerts, alert_ids)


@shared_task(name=SCORE_IMAGES, bind=True, time_limit=660, soft_time_limit=600, max_retries=5)
def score_images(self, image_ids: list[int]) -> dict:
    return _through_outages(self, inference.score_images, image_ids)


@shared_task(name=MEASURE_SHIFT, bind=True, time_limit=1200, soft_time_limit=1140, max_retries=5)
def measure_shift(self) -> dict:
    """Every hospital with new classified images, measured against the champion's training images."""
    return _through_outages(self, measure_shifts)


def _forget_session() -> None:
    """Drop the session's transaction on a connection that has gone; the pool reconnects on the next use."""
    try:
        db.session.rollback()
    except OUTAGES:
        pass


@shared_task(name=REQUEUE_STALE, time_limit=120)
def requeue_stale() -> dict:
    """Queue again what a lost message or a broker restart left behind: images the database says are waiting
    that no message in the broker carries, and alerts without a heatmap that no message will draw. Only those
    older than REQUEUE_AFTER_SECONDS, for the moment between the web's commit and its send; a long backlog
    is in the broker, so it is never sent twice."""
    celery_app = current_app.extensions["celery"]
    # The broker first, then the database: a task that finishes in between is then waiting in neither.
    in_broker = {image_id for args in task_args_in_broker(celery_app, INFERENCE_QUEUE, CLASSIFY_IMAGES)
                 for image_id in args[0]}
    drawing = {args[0] for args in task_args_in_broker(celery_app, EXPLAIN_QUEUE, EXPLAIN_ALERT)}
    cutoff = utcnow() - dt.timedelta(seconds=current_app.config["REQUEUE_AFTER_SECONDS"])
    waiting = db.session.scalars(
        db.select(Image.id).where(Image.status == ImageStatus.QUEUED, Image.updated_at < cutoff)
        .order_by(Image.id).limit(100_000))
    ids = [image_id for image_id in waiting if image_id not in in_broker]
    if ids:
        # Touch them, so a sweep that runs before their messages are read waits a full period again.
        db.session.execute(db.update(Image).where(Image.id.in_(ids)).values(updated_at=utcnow()))
        db.session.commit()
        send_classify(current_app, ids)
        log.warning("requeued %d images that no message in the broker carried", len(ids))
    alerts = db.session.scalars(
        db.select(Alert.id).where(Alert.heatmap_path.is_(None), Alert.created_at < cutoff,
                                  Alert.heatmap_attempts < current_app.config["MAX_ATTEMPTS"])
        .order_by(Alert.id).limit(10_000))
    alert_ids = [alert_id for alert_id in alerts if alert_id not in drawing]
    for alert_id in alert_ids:
        celery_app.send_task(EXPLAIN_ALERT, args=[alert_id], queue=EXPLAIN_QUEUE)
    return {"images": len(ids), "heatmaps": len(alert_ids)}


# Not acks_late: a training run outlives the broker's visibility timeout and must not be redelivered.
# Its result is kept (unlike other tasks'), so `melanoma retrain --now --wait` can say how it ended.
@shared_task(name=RETRAIN, bind=True, time_limit=RETRAIN_TIME_LIMIT, acks_late=False, ignore_result=False)
def retrain(self) -> int | None:
    """Train a new model on the RETRAIN_DATA_DIRS folders plus the hospitals' confirmed images (less each
    hospital's held-back share), with the champion's recipe, register it, and let the gate (worker/gate.py)
    promote or reject it. One at a time: a run asked for while another holds the lock is skipped, and says so
    in the audit trail."""
    with _only_one_retraining() as running:
        if not running:
            AuditEvent.record("schedule:retrain", "model.retrain_skipped", "retrain",
                              reason="another retraining is running")
            db.session.commit()
            return None
        started = utcnow().isoformat(timespec="seconds")

        def report(stage: str, **fields) -> None:
            report_retrain_progress(current_app, task=self.request.id, started_at=started, stage=stage, **fields)

        try:
            version_id, verdict = _retrain(report)
        except Exception as error:
            report("failed", error=repr(error)[:500])
            raise
        report("done", model=version_id, verdict=verdict)
        return version_id


@contextlib.contextmanager
def _only_one_retraining():
    """A lock in Redis, renewed every 30 s while the run lasts: a run killed outright frees it within
    RETRAIN_LOCK_SECONDS, so the next one starts."""
    client = redis.Redis.from_url(current_app.config["REDIS_URL"])
    lock = client.lock(RETRAIN_LOCK, timeout=RETRAIN_LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        yield False
        return
    done = threading.Event()

    def renew():
        while not done.wait(RETRAIN_LOCK_SECONDS / 4):
            lock.reacquire()

    threading.Thread(target=renew, name="retrain-lock", daemon=True).start()
    try:
        yield True
    finally:
        done.set()
        try:
            lock.release()
        except redis.exceptions.LockError:  # expired meanwhile (Redis was away): nothing to free
            pass


def _retrain(report) -> tuple[int, str | None]:
    """(the new version's id, the gate's verdict); report(stage, **fields) tells how far it has got."""
    from models import ModelVersion
    from worker.classifier.artifacts import CARD_NAME
    from worker.classifier.training import recipe_defaults, train
    from worker.gate import judge
    from worker.registry import register_model
    from worker.snapshot import export

    config = current_app.config
    data_dirs = config["RETRAIN_DATA_DIRS"]
    if not data_dirs:
        raise ValueError("RETRAIN_DATA_DIRS is not set; point it at folders of class folders (comma-separated)")
    models_dir = Path(config["INSTANCE_DIR"]) / "models"
    _remove_abandoned_runs(models_dir)
    out_dir = models_dir / utcnow().strftime("%Y%m%d-%H%M%S")
    # Trained under a name no one registers, renamed when complete: a run killed midway (out of memory, a
    # deploy) leaves a .partial folder, never a model folder with half its files.
    partial = out_dir.with_name(out_dir.name + PARTIAL)
    report("exporting confirmed images")
    snapshot = export(Path(config["INSTANCE_DIR"]) / "snapshots" / out_dir.name, config["STORAGE_DIR"],
                      config["HOLDBACK_PERCENT"])
    champion = ModelVersion.champion()
    training = (champion.card or {}).get("training", {}) if champion else {}
    backbone = training.get("backbone", "efficientnet_lite0")
    # Each hospital's confirmed images weigh CONFIRMED_IMAGE_WEIGHT times a base image of their class.
    weights = {row["source"]: config["CONFIRMED_IMAGE_WEIGHT"] for row in snapshot.training}
    # The confirmed images train whole, outside the split: the base folders' split stays the champion's, so
    # the two are compared on test images neither trained on.
    recipe = recipe_defaults(backbone, epochs=training.get("epochs"),
                             input_size=champion.input_size if champion else None,
                             **{key: training.get(key) for key in ("augmentation", "style_mix", "colour", "loss",
                                                                   "source_adversary")},
                             # A champion from before the field was a choice looked at the whole picture.
                             field=training.get("field", 1.0) if champion else None)
    report("training", epoch=0, epochs=recipe["epochs"])
    train(data_dirs, partial, backbone=backbone, seed=training.get("seed", 0), verbose=0, source_weights=weights,
          train_only_dirs=[snapshot.folder] if snapshot.training else None, **recipe,
          progress=lambda epoch, figures: report("training", epoch=epoch, epochs=recipe["epochs"], figures=figures))
    card = json.loads((partial / CARD_NAME).read_text())
    card["training"]["snapshot"] = snapshot.summary()
    (partial / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    partial.rename(out_dir)
    version = register_model(out_dir, promote=False, actor="schedule:retrain")
    if champion is None:
        return version.id, None
    report("judging", model=version.id)
    return version.id, judge(champion, version, out_dir, data_dirs, snapshot)


def _remove_abandoned_runs(models_dir: Path) -> None:
    """Folders of runs that died midway, older than any run may last (so a run in progress is never touched)."""
    for folder in models_dir.glob(f"*{PARTIAL}"):
        if time.time() - folder.stat().st_mtime > RETRAIN_TIME_LIMIT:
            log.warning("removing %s, left by a training run that did not finish", folder)
            shutil.rmtree(folder, ignore_errors=True)
