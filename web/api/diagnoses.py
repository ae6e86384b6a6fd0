"""Confirmed diagnoses of the calling hospital's images: POST them (JSON rows or a CSV), GET them back."""

from flask import g, request, url_for

from models import ConfirmedDiagnosis, Image, db
from models.base import MAX_ID
from web import diagnoses
from web.api import bp
from web.api.auth import require_api_key
from web.api.errors import ApiError
from web.api.routes import int_arg


@bp.post("/diagnoses")
@require_api_key
def post_diagnoses():
    """`{"diagnoses": [row, ...]}`, or a CSV (an uploaded file, or the body as text/csv) with the same
    columns. Answers the rows stored, unchanged and refused (each with its reason), numbered from 1."""
    rows = _rows()
    if len(rows) > diagnoses.MAX_ROWS:
        raise ApiError(413, f"{len(rows)} rows; at most {diagnoses.MAX_ROWS} a request")
    outcome = diagnoses.record(g.hospital, rows, actor=f"hospital:{g.hospital.id}")
    body = {"stored": len(outcome.stored), "unchanged": len(outcome.unchanged), "refused": outcome.refused,
            "diagnoses": outcome.stored + outcome.unchanged}
    # Every row refused is an answer about the request, not only about its rows.
    return body, 200 if outcome.stored or outcome.unchanged or not rows else 422


def _rows() -> list:
    if request.files:
        text = next(iter(request.files.values())).read()
        return _csv_rows(text)
    if request.mimetype == "text/csv":
        return _csv_rows(request.get_data())
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("diagnoses"), list):
        raise ApiError(400, 'send JSON {"diagnoses": [{"image_id": 1, "diagnosis": "melanoma", '
                            '"method": "histopathology"}, ...]}, or a CSV file with the columns '
                            + ", ".join(diagnoses.CSV_COLUMNS))
    return body["diagnoses"]


def _csv_rows(data: bytes) -> list[dict]:
    try:
        return diagnoses.rows_from_csv(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "the CSV must be UTF-8") from None
    except ValueError as error:
        raise ApiError(400, str(error)) from None


@bp.get("/diagnoses")
@require_api_key
def list_diagnoses():
    """Every confirmation this hospital recorded, newest first, `limit` at a time (at most 500), `next` for the
    older ones; `current` says whether it is the one that counts for its image. `image_id` narrows to one."""
    limit = int_arg("limit", 100, 1, 500)
    before = int_arg("before", MAX_ID, 1, MAX_ID)
    where = [ConfirmedDiagnosis.hospital_id == g.hospital.id, ConfirmedDiagnosis.id < before]
    if "image_id" in request.args:
        where.append(ConfirmedDiagnosis.image_id == int_arg("image_id", 0, 1, MAX_ID))
    rows = db.session.execute(
        db.select(ConfirmedDiagnosis, Image).join(Image, ConfirmedDiagnosis.image_id == Image.id).where(*where)
        .order_by(ConfirmedDiagnosis.id.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    current = ConfirmedDiagnosis.newest(list({label.image_id for label, _ in rows}))
    return {"diagnoses": [diagnosis_json(label, image, current[label.image_id].id == label.id)
                          for label, image in rows],
            "next": url_for("api.list_diagnoses", limit=limit, before=rows[-1][0].id, _external=True)
            if more else None}


def diagnosis_json(label: ConfirmedDiagnosis, image: Image, current: bool) -> dict:
    return {"id": label.id, "image_id": image.id, "batch_id": image.batch_id, "filename": image.filename,
            "sha256": image.sha256, "diagnosis": label.diagnosis, "method": label.method,
            "confirmed_by": label.confirmed_by, "recorded_by": label.recorded_by,
            "recorded_at": label.recorded_at.isoformat(), "replaced": label.replaced, "current": current}
