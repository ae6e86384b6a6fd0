"""Admins' pages: the model registry (statuses, figures side by side, plots; promote and roll back after a
confirmation) and operations (queues, workers, throughput, failures, hospitals' API keys)."""

import datetime as dt

from flask import abort, current_app, flash, redirect, render_template, request, send_file, url_for
from redis.exceptions import RedisError

from models import ApiKey, AuditEvent, Hospital, Image, ModelVersion, Prediction, User, db, utcnow
from models.base import MAX_ID
from models.batch import ImageStatus
from web.config import resolve_path
from web.dashboard import actor, admin_required, bp
from web.queue import EXPLAIN_QUEUE, INFERENCE_QUEUE, MAINTENANCE_QUEUE, TRAINING_QUEUE, consumers, queue_depth

PLOTS = {"roc": "ROC curve", "confusion_matrix": "confusion matrix", "reliability": "reliability diagram",
         "training_curves": "training curves"}
FIGURES = (("melanoma_auc", "melanoma AUC"), ("melanoma_sensitivity", "melanoma sensitivity"),
           ("melanoma_specificity", "melanoma specificity"), ("balanced_accuracy", "balanced accuracy"),
           ("accuracy", "accuracy"))


def _get_or_404(record_class, record_id: int):
    record = db.session.get(record_class, record_id) if record_id <= MAX_ID else None
    if record is None:
        abort(404)
    return record


@bp.get("/models")
@admin_required
def model_list():
    versions = db.session.scalars(db.select(ModelVersion).order_by(ModelVersion.id.desc())).all()
    plots = {version.id: [name for name in PLOTS if (_model_dir(version) / "evaluation" / f"{name}.png").is_file()]
             for version in versions}
    return render_template("models.html", versions=versions, figures=FIGURES, plots=plots, plot_names=PLOTS,
                           previous=ModelVersion.previous_champion())


def _model_dir(version: ModelVersion):
    return resolve_path(version.artifact_path).parent


@bp.get("/models/<int:model_id>/plots/<name>.png")
@admin_required
def model_plot(model_id: int, name: str):
    version = _get_or_404(ModelVersion, model_id)
    path = _model_dir(version) / "evaluation" / f"{name}.png"
    if name not in PLOTS or not path.is_file():
        abort(404)
    return send_file(path, mimetype="image/png", max_age=3600)


@bp.post("/models/<int:model_id>/promote")
@admin_required
def model_promote(model_id: int):
    version = _get_or_404(ModelVersion, model_id)
    if request.form.get("confirm") != "yes":
        return render_template("confirm.html", question=f"Serve {version.label} to every hospital from now on?",
                               detail=f"It replaces {(ModelVersion.champion() or version).label}; workers pick it "
                                      "up at their next task. Open alerts keep their scores until re-scored.",
                               action=url_for("dashboard.model_promote", model_id=version.id), button="Promote")
    version.promote()
    AuditEvent.record(actor(), "model.promoted", f"model:{version.id}", label=version.label)
    db.session.commit()
    flash(f"{version.label} is the champion now.")
    return redirect(url_for("dashboard.model_list"))


@bp.post("/models/rollback")
@admin_required
def model_rollback():
    champion, previous = ModelVersion.champion(), ModelVersion.previous_champion()
    if previous is None:
        flash("Not done: there is no earlier champion to roll back to.", "error")
        return redirect(url_for("dashboard.model_list"))
    reason = request.form.get("reason", "").strip()
    if request.form.get("confirm") != "yes" or not reason:
        return render_template("confirm.html", question=f"Roll back to {previous.label}?",
                               detail=f"{champion.label if champion else 'The champion'} will be marked rejected "
                                      "with your reason.", reason=True,
                               action=url_for("dashboard.model_rollback"), button="Roll back")
    ModelVersion.rollback(actor(), reason)
    flash(f"{previous.label} is the champion again.")
    return redirect(url_for("dashboard.model_list"))


@bp.get("/operations")
@admin_required
def operations():
    celery_app = current_app.extensions["celery"]
    queues = {}
    for queue in (INFERENCE_QUEUE, EXPLAIN_QUEUE, TRAINING_QUEUE, MAINTENANCE_QUEUE):
        try:
            queues[queue] = {"depth": queue_depth(celery_app, queue), "workers": consumers(celery_app, queue)}
        except (RedisError, OSError) as error:
            queues[queue] = {"depth": None, "workers": [], "error": str(error)}
    hour_ago = utcnow() - dt.timedelta(hours=1)
    classified = db.session.scalar(db.select(db.func.count(Prediction.id)).where(Prediction.created_at >= hour_ago))
    failures = db.session.execute(
        db.select(Image.id, Image.batch_id, Image.filename, Image.rejection_reason, Image.updated_at, Hospital.name)
        .join(Hospital).where(Image.status == ImageStatus.FAILED).order_by(Image.updated_at.desc()).limit(20)).all()
    hospitals = db.session.scalars(db.select(Hospital).order_by(Hospital.name)).all()
    keys = db.session.scalars(db.select(ApiKey).order_by(ApiKey.hospital_id, ApiKey.id)).all()
    users = db.session.scalars(db.select(User).order_by(User.email)).all()
    return render_template("operations.html", queues=queues, classified=classified, failures=failures,
                           hospitals=hospitals, keys=keys, users=users)


@bp.post("/hospitals/<int:hospital_id>/keys")
@admin_required
def key_create(hospital_id: int):
    hospital = _get_or_404(Hospital, hospital_id)
    key = hospital.issue_api_key()
    AuditEvent.record(actor(), "hospital.key_issued", f"hospital:{hospital.id}")
    db.session.commit()
    return render_template("new_key.html", hospital=hospital, key=key)


@bp.post("/keys/<int:key_id>/revoke")
@admin_required
def key_revoke(key_id: int):
    key = _get_or_404(ApiKey, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        AuditEvent.record(actor(), "hospital.key_revoked", f"hospital:{key.hospital_id}", prefix=key.prefix)
        db.session.commit()
        flash(f"Key {key.prefix}… revoked: it is refused from the next request on.")
    return redirect(url_for("dashboard.operations"))
