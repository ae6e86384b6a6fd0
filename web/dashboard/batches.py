"""Batches: the list, and a batch's page with live progress (the page polls progress.json while the workers
run), its images with thumbnails, results and rejection reasons, and the results CSV."""

import datetime as dt

from flask import Response, render_template, request
from sqlalchemy.orm import selectinload

from models import Alert, Batch, Hospital, Image, Prediction, db, utcnow
from models.batch import ImageStatus
from web.dashboard import bp, own_or_404, visible
from web.results import batch_results, to_csv

PAGE_SIZE = 50


@bp.get("/batches")
def batch_list():
    page = max(1, request.args.get("page", 1, type=int) or 1)
    total = db.session.scalar(db.select(db.func.count(Batch.id)).where(visible(Batch.hospital_id)))
    batches = db.session.execute(
        db.select(Batch, Hospital.name).join(Hospital).where(visible(Batch.hospital_id))
        .order_by(Batch.id.desc()).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
    ids = [batch.id for batch, _ in batches]
    counts = {batch_id: {} for batch_id in ids}
    for batch_id, status, count in db.session.execute(
            db.select(Image.batch_id, Image.status, db.func.count()).where(Image.batch_id.in_(ids))
            .group_by(Image.batch_id, Image.status)):
        counts[batch_id][status] = count
    alerts = dict(db.session.execute(
        db.select(Image.batch_id, db.func.count(Alert.id)).join(Prediction, Prediction.image_id == Image.id)
        .join(Alert, Alert.prediction_id == Prediction.id).where(Image.batch_id.in_(ids))
        .group_by(Image.batch_id)).all())
    return render_template("batches.html", batches=batches, counts=counts, alerts=alerts, page=page,
                           pages=max(1, -(-total // PAGE_SIZE)), total=total)


def progress(batch: Batch) -> dict:
    counts = batch.counts()
    finished = counts[ImageStatus.DONE] + counts[ImageStatus.REJECTED] + counts[ImageStatus.FAILED]
    created = batch.created_at if batch.created_at.tzinfo else batch.created_at.replace(tzinfo=dt.UTC)
    elapsed = (utcnow() - created).total_seconds()
    remaining = batch.image_count - finished
    # At the pace so far; none before the first image is finished.
    eta = round(elapsed * remaining / finished) if finished and remaining else None
    return {"id": batch.id, "status": batch.status, "total": batch.image_count, "finished": finished,
            "done": counts[ImageStatus.DONE], "rejected": counts[ImageStatus.REJECTED],
            "failed": counts[ImageStatus.FAILED], "queued": counts[ImageStatus.QUEUED], "alerts": counts["alerts"],
            "quality_warnings": counts["quality_warnings"], "seconds_left": 0 if not remaining else eta}


@bp.get("/batches/<int:batch_id>")
def batch_page(batch_id: int):
    batch = own_or_404(Batch, batch_id)
    images = db.session.scalars(db.select(Image).where(Image.batch_id == batch.id).order_by(Image.id).options(
        selectinload(Image.predictions).selectinload(Prediction.alert),
        selectinload(Image.predictions).selectinload(Prediction.repeat_of).selectinload(Prediction.alert))).all()
    rows = []
    for image in images:
        prediction = image.predictions[-1] if image.predictions else None
        alert = prediction and (prediction.alert or (prediction.repeat_of and prediction.repeat_of.alert))
        rows.append({"image": image, "prediction": prediction, "alert": alert or None})
    return render_template("batch.html", batch=batch, rows=rows, progress=progress(batch),
                           hospital=db.session.get(Hospital, batch.hospital_id))


@bp.get("/batches/<int:batch_id>/progress.json")
def batch_progress(batch_id: int):
    return progress(own_or_404(Batch, batch_id))


@bp.get("/batches/<int:batch_id>/results.csv")
def batch_csv(batch_id: int):
    batch = own_or_404(Batch, batch_id)
    return Response(to_csv(batch_results(batch)), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=batch-{batch.id}-results.csv"})
