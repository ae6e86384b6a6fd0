"""Batches, results and alerts for the calling hospital; another hospital's rows answer 404."""

from flask import Response, current_app, g, request, url_for
from sqlalchemy.orm import selectinload

from models import Alert, Batch, Prediction, db
from models.base import MAX_ID
from models.prediction import AlertStatus
from web import alerts as alert_actions
from web.api import bp
from web.api.auth import require_api_key
from web.api.errors import ApiError
from web.ingest import IdempotencyConflict, Upload, create_batch
from web.references import ReferencesError, parse_references
from web.reliability import reliability
from web.results import batch_results, to_csv
from web.storage import ImageStore

MAX_IDEMPOTENCY_KEY = 200


def _own_batch(batch_id: int) -> Batch:
    batch = db.session.get(Batch, batch_id) if batch_id <= MAX_ID else None
    if batch is None or batch.hospital_id != g.hospital.id:
        raise ApiError(404, f"no batch {batch_id} for this hospital")
    return batch


def batch_json(batch: Batch) -> dict:
    return {
        "id": batch.id,
        "url": url_for("api.get_batch", batch_id=batch.id, _external=True),
        "results_url": url_for("api.get_results", batch_id=batch.id, _external=True),
        "status": batch.status,
        "image_count": batch.image_count,
        "counts": batch.counts(),
        "created_at": batch.created_at.isoformat(),
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
    }


@bp.post("/batches")
@require_api_key
def create_batch_view():
    """Multipart upload: every file part (any field name) is one image of the batch; an optional `references`
    text field is a CSV of the hospital's patient and lesion codes for them (web/references.py)."""
    files = [storage for _, storage in request.files.items(multi=True)]
    if not files and request.mimetype == "multipart/form-data" and request.content_length and not request.form:
        # Werkzeug drops the whole body, silently, when a part header is not UTF-8 (a file name in Latin-1).
        raise ApiError(400, "the multipart body could not be read: every part header, file names included, "
                            "must be UTF-8 and every part must close with the boundary; nothing was stored")
    if not files:
        raise ApiError(400, "no files: send images as multipart/form-data file fields (e.g. -F files=@a.jpg)")
    if len(files) > current_app.config["MAX_FILES_PER_BATCH"]:
        raise ApiError(413, f"{len(files)} files; at most {current_app.config['MAX_FILES_PER_BATCH']} per batch")
    key = request.headers.get("Idempotency-Key", "").strip() or None
    if key and len(key) > MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters")
    names = [_clean_filename(storage.filename, index) for index, storage in enumerate(files, start=1)]
    try:
        references = parse_references(request.form.get("references", ""), names) \
            if "references" in request.form else None
    except ReferencesError as error:
        raise ApiError(400, f"{error}; nothing was stored") from None
    # A file over MAX_FILE_MB is measured and hashed on its stream, never read into memory, and rejected.
    max_bytes = current_app.config["MAX_FILE_MB"] * 1024 * 1024
    uploads = (Upload.from_stream(name, storage.stream, max_bytes) for name, storage in zip(names, files, strict=True))
    try:
        batch, created = create_batch(g.hospital, uploads, idempotency_key=key, references=references)
    except IdempotencyConflict as conflict:
        raise ApiError(422, str(conflict)) from None
    body = batch_json(batch)
    status = 202 if created else 200
    return body, status, {"Location": body["url"]}


def _clean_filename(name: str | None, index: int) -> str:
    """The name as the hospital sent it (it is their reference), without control characters."""
    cleaned = "".join(character for character in (name or "") if character.isprintable())
    return cleaned[:500] or f"file-{index}"


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high]; anything else is a 400 that says so."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be from {low} to {high}, got {value}")
    return value


@bp.get("/batches")
@require_api_key
def list_batches():
    """Newest first, `limit` at a time (at most 500); `next` is the URL of the older ones."""
    limit = int_arg("limit", 50, 1, 500)
    before = int_arg("before", MAX_ID, 1, MAX_ID)
    batches = db.session.scalars(
        db.select(Batch).where(Batch.hospital_id == g.hospital.id, Batch.id < before)
        .order_by(Batch.id.desc()).limit(limit + 1)
    ).all()
    more = len(batches) > limit
    batches = batches[:limit]
    return {"batches": [batch_json(batch) for batch in batches],
            "next": url_for("api.list_batches", limit=limit, before=batches[-1].id, _external=True) if more else None}


@bp.get("/batches/<int:batch_id>")
@require_api_key
def get_batch(batch_id: int):
    return {**batch_json(_own_batch(batch_id)), "reliability_warning": reliability(g.hospital)["warning"]}


@bp.get("/batches/<int:batch_id>/results")
@require_api_key
def get_results(batch_id: int):
    batch = _own_batch(batch_id)
    rows = batch_results(batch)
    result_format = request.args.get("format", "json").lower()
    warning = reliability(g.hospital)["warning"]
    if result_format == "csv":
        # A CSV has no place for a sentence about the whole batch: it comes as a header.
        headers = {"Content-Disposition": f"attachment; filename=batch-{batch.id}-results.csv"}
        return Response(to_csv(rows), mimetype="text/csv",
                        headers=headers | ({"X-Reliability-Warning": warning} if warning else {}))
    if result_format != "json":
        raise ApiError(400, f"unknown format {result_format!r}; use json or csv")
    return {"batch": {**batch_json(batch), "reliability_warning": warning}, "results": rows}


@bp.get("/alerts")
@require_api_key
def list_alerts():
    """Highest melanoma probability first, `limit` at a time (default 1000, at most 5000); `total` counts
    them all and `next` is the URL of the rest."""
    status = request.args.get("status", AlertStatus.OPEN)
    if status not in AlertStatus.ALL:
        raise ApiError(400, f"unknown alert status {status!r}; use {', '.join(AlertStatus.ALL)}")
    limit = int_arg("limit", 1000, 1, 5000)
    offset = int_arg("offset", 0, 0, MAX_ID)
    where = (Alert.hospital_id == g.hospital.id, Alert.status == status)
    total = db.session.scalar(db.select(db.func.count(Alert.id)).where(*where))
    alerts = db.session.scalars(
        db.select(Alert).where(*where).order_by(Alert.melanoma_probability.desc(), Alert.id)
        .offset(offset).limit(limit)
        .options(selectinload(Alert.prediction).selectinload(Prediction.image),
                 selectinload(Alert.prediction).selectinload(Prediction.model_version))
    ).all()
    more = offset + len(alerts) < total
    return {"alerts": [alert_json(alert) for alert in alerts], "total": total,
            "next": url_for("api.list_alerts", status=status, limit=limit, offset=offset + limit, _external=True)
            if more else None}


def _own_alert(alert_id: int) -> Alert:
    alert = db.session.get(Alert, alert_id) if alert_id <= MAX_ID else None
    if alert is None or alert.hospital_id != g.hospital.id:
        raise ApiError(404, f"no alert {alert_id} for this hospital")
    return alert


@bp.post("/alerts/<int:alert_id>/acknowledge")
@require_api_key
def acknowledge_alert(alert_id: int):
    """Someone at the hospital has seen the alert; it stays on the worklist until it is resolved."""
    alert = _own_alert(alert_id)
    try:
        alert_actions.acknowledge(alert, actor=f"hospital:{g.hospital.id}")
    except alert_actions.ActionRefused as refused:
        raise ApiError(409, str(refused)) from None
    return alert_json(alert)


@bp.post("/alerts/<int:alert_id>/resolve")
@require_api_key
def resolve_alert(alert_id: int):
    """Close the alert with the picture's confirmed diagnosis: JSON {"diagnosis", "method", "confirmed_by"?}, as
    one row of POST /diagnoses; the label is stored on every copy of the picture."""
    alert = _own_alert(alert_id)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, 'send JSON: {"diagnosis": one of the 9 classes or "other", "method": histopathology, '
                            'consensus, follow-up or clinical, "confirmed_by": optional}')
    try:
        label = alert_actions.resolve(alert, body.get("diagnosis", ""), body.get("method", ""),
                               actor=f"hospital:{g.hospital.id}", confirmed_by=body.get("confirmed_by"))
    except alert_actions.ActionRefused as refused:
        raise ApiError(409 if alert.status in alert_actions.CLOSED else 422, str(refused)) from None
    return {**alert_json(alert), "confirmed_diagnosis": label}


@bp.get("/alerts/<int:alert_id>/heatmap")
@require_api_key
def alert_heatmap(alert_id: int):
    """Where the model looked for melanoma in the alerted image (PNG), once a worker has drawn it."""
    alert = _own_alert(alert_id)
    if not alert.heatmap_path:
        if alert.heatmap_error and alert.heatmap_attempts >= current_app.config["MAX_ATTEMPTS"]:
            raise ApiError(404, f"the heatmap could not be drawn: {alert.heatmap_error}")
        raise ApiError(404, "the heatmap is not drawn yet; try again in a minute")
    try:
        png = ImageStore(current_app.config["STORAGE_DIR"]).read(alert.heatmap_path)
    except FileNotFoundError:
        # Forget the lost file, so the sweep for alerts without a heatmap draws it again.
        alert.heatmap_path, alert.heatmap_attempts = None, 0
        db.session.commit()
        raise ApiError(404, "the heatmap file is missing from storage; it will be drawn again") from None
    return Response(png, mimetype="image/png")


def alert_json(alert: Alert) -> dict:
    image = alert.prediction.image
    return {
        "id": alert.id,
        "status": alert.status,
        "melanoma_probability": alert.melanoma_probability,
        "threshold": alert.threshold,
        "quality_warning": alert.prediction.quality_warning,
        "batch_id": image.batch_id,
        "filename": image.filename,
        "sha256": image.sha256,
        "model_version": alert.prediction.model_version.label,
        "image_id": image.id,
        "created_at": alert.created_at.isoformat(),
        "heatmap_url": url_for("api.alert_heatmap", alert_id=alert.id, _external=True) if alert.heatmap_path else None,
    }
