"""The worklist (the home page: alerts to work through, highest melanoma probability first, paged and
filtered) and the alert page with its actions. The worklist costs the same few queries whatever its page size."""

import datetime as dt

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from models import Alert, Batch, ConfirmedDiagnosis, Hospital, Image, Prediction, User, db
from models.diagnosis import DIAGNOSES, METHODS
from models.prediction import AlertStatus
from web import alerts as actions
from web.dashboard import actor, bp, own_or_404, visible
from web.reliability import reliability

PAGE_SIZE = 50
# "To do": what still needs a dermatologist, the worklist's default.
TO_DO = "to-do"
STATUS_FILTERS = {TO_DO: (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED), **{s: (s,) for s in AlertStatus.ALL},
                  "all": AlertStatus.ALL}
QUALITY_FILTERS = ("any", "warning", "none")


def _date(name: str) -> dt.datetime | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        return dt.datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        abort(400, f"{name} must be a date as YYYY-MM-DD, got {raw!r}")


def _filters() -> dict:
    status = request.args.get("status", TO_DO)
    quality = request.args.get("quality", "any")
    if status not in STATUS_FILTERS or quality not in QUALITY_FILTERS:
        abort(400, f"status is one of {', '.join(STATUS_FILTERS)}; quality one of {', '.join(QUALITY_FILTERS)}")
    hospital = request.args.get("hospital", "")
    return {"status": status, "quality": quality, "hospital": int(hospital) if hospital.isdigit() else None,
            "since": _date("since"), "until": _date("until"), "patient": request.args.get("patient", "").strip()}


@bp.get("/")
def worklist():
    chosen = _filters()
    page = max(1, request.args.get("page", 1, type=int) or 1)
    # Every filter but the status, so the counts per status show what each status tab holds.
    where = [visible(Alert.hospital_id)]
    if chosen["hospital"]:
        where.append(Alert.hospital_id == chosen["hospital"])
    if chosen["since"]:
        where.append(Alert.created_at >= chosen["since"])
    if chosen["until"]:
        where.append(Alert.created_at < chosen["until"] + dt.timedelta(days=1))
    if chosen["patient"]:
        where.append(Image.patient_ref == chosen["patient"])
    if chosen["quality"] != "any":
        warned = Prediction.quality_warning.is_not(None)
        where.append(warned if chosen["quality"] == "warning" else ~warned)
    counts = dict(db.session.execute(db.select(Alert.status, db.func.count(Alert.id)).join(Prediction)
                                     .join(Image, Prediction.image_id == Image.id)
                                     .where(*where).group_by(Alert.status)).all())
    counts = {status: counts.get(status, 0) for status in AlertStatus.ALL}
    statuses = STATUS_FILTERS[chosen["status"]]
    total = sum(counts[status] for status in statuses)
    rows = db.session.execute(
        db.select(Alert.id, Alert.status, Alert.melanoma_probability, Alert.threshold, Alert.created_at,
                  Image.id.label("image_id"), Image.batch_id, Image.filename, Image.patient_ref, Image.lesion_ref,
                  Prediction.quality_warning,
                  Hospital.name.label("hospital"), User.email.label("assigned_to"))
        .join(Prediction, Alert.prediction_id == Prediction.id).join(Image, Prediction.image_id == Image.id)
        .join(Hospital, Alert.hospital_id == Hospital.id).outerjoin(User, Alert.assigned_user_id == User.id)
        .where(*where, Alert.status.in_(statuses))
        .order_by(Alert.melanoma_probability.desc(), Alert.id).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)
    ).all()
    hospitals = db.session.execute(db.select(Hospital.id, Hospital.name).where(visible(Hospital.id))
                                   .order_by(Hospital.name)).all()
    pages = max(1, -(-total // PAGE_SIZE))
    arguments = {name: value for name, value in request.args.items() if name != "page" and value}
    return render_template("worklist.html", rows=rows, counts=counts, total=total, page=page, pages=pages,
                           chosen=chosen, arguments=arguments, hospitals=hospitals,
                           tab_counts={name: sum(counts[status] for status in statuses)
                                       for name, statuses in STATUS_FILTERS.items()},
                           page_size=PAGE_SIZE)


@bp.get("/alerts/<int:alert_id>")
def alert_page(alert_id: int):
    alert = own_or_404(Alert, alert_id)
    prediction = alert.prediction
    image = prediction.image
    submissions = db.session.execute(
        db.select(Image.id, Image.batch_id, Image.filename, Image.created_at)
        .where(Image.hospital_id == image.hospital_id, Image.sha256 == image.sha256).order_by(Image.id)).all()
    confirmed = ConfirmedDiagnosis.newest([image.id]).get(image.id)
    # The patient's other pictures, newest first, to compare a lesion over time and with its neighbours; a
    # picture sent again appears once, as its first copy, which holds the alert.
    patient_pictures = db.session.execute(
        db.select(Image.id, Image.batch_id, Image.filename, Image.lesion_ref, Image.created_at,
                  Prediction.melanoma_probability, Alert.id.label("alert_id"))
        .outerjoin(Prediction, Prediction.id == db.select(db.func.max(Prediction.id))
                   .where(Prediction.image_id == Image.id).correlate(Image).scalar_subquery())
        .outerjoin(Alert, Alert.prediction_id == Prediction.id)
        .where(Image.hospital_id == image.hospital_id, Image.patient_ref == image.patient_ref,
               Image.sha256 != image.sha256, Prediction.repeat_of_id.is_(None))  # a resent picture once
        .order_by(Image.id.desc()).limit(PAGE_SIZE)).all() if image.patient_ref else []
    probabilities = sorted(prediction.probabilities.items(), key=lambda item: -item[1])
    return render_template(
        "alert.html", alert=alert, prediction=prediction, image=image, submissions=submissions,
        patient_pictures=patient_pictures,
        confirmed=confirmed, probabilities=probabilities, history=actions.history(alert),
        hospital=db.session.get(Hospital, alert.hospital_id), batch=db.session.get(Batch, image.batch_id),
        warning=reliability(db.session.get(Hospital, alert.hospital_id))["warning"],
        diagnoses=DIAGNOSES, methods=METHODS, closed=alert.status in actions.CLOSED)


@bp.post("/alerts/<int:alert_id>/<action>")
def alert_action(alert_id: int, action: str):
    alert = own_or_404(Alert, alert_id)
    form = request.form
    try:
        if action == "acknowledge":
            actions.acknowledge(alert, actor())
            flash("Acknowledged.")
        elif action == "assign":
            actions.assign(alert, current_user, actor())
            flash("Assigned to you.")
        elif action == "comment":
            actions.comment(alert, form.get("comment", ""), actor())
            flash("Comment added.")
        elif action == "resolve":
            label = actions.resolve(alert, form.get("diagnosis", ""), form.get("method", ""), actor(),
                                    confirmed_by=form.get("confirmed_by") or None)
            flash(f"Resolved: confirmed {label['diagnosis']} ({label['method']}).")
        elif action == "dismiss":
            actions.dismiss(alert, form.get("reason", ""), actor())
            flash("Dismissed.")
        else:
            abort(404)
    except actions.ActionRefused as refused:
        db.session.rollback()
        flash(f"Not done: {refused}", "error")
    return redirect(url_for("dashboard.alert_page", alert_id=alert.id))
