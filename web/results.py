"""The results table a hospital gets back, as rows and as CSV; shared by the API and `melanoma predict`."""

import csv
import io

from sqlalchemy.orm import selectinload

from models import Batch, ConfirmedDiagnosis, Image, Prediction, db
from models.prediction import AlertStatus

RESULT_COLUMNS = ("filename", "patient_ref", "lesion_ref", "status", "predicted_class", "melanoma_probability",
                  "alert", "quality_warning", "rejection_reason", "sha256", "model_version", "image_id",
                  "confirmed_diagnosis", "confirmed_method", "repeat_of_image_id")


def result_row(filename: str, status: str, sha256: str = "", predicted_class: str | None = None,
               melanoma_probability: float | None = None, alert: bool = False, quality_warning: str | None = None,
               rejection_reason: str | None = None, model_version: str | None = None, image_id: int | None = None,
               confirmed_diagnosis: str | None = None, confirmed_method: str | None = None,
               repeat_of_image_id: int | None = None, patient_ref: str | None = None,
               lesion_ref: str | None = None) -> dict:
    """One image's row. image_id and the confirmed diagnosis (the newest one recorded, with how it was
    confirmed) are there for results from the server, so a hospital can name the image when it posts one."""
    return {
        "filename": filename,
        "patient_ref": patient_ref,
        "lesion_ref": lesion_ref,
        "status": status,
        "predicted_class": predicted_class,
        "melanoma_probability": None if melanoma_probability is None else round(float(melanoma_probability), 6),
        "alert": alert,
        "quality_warning": quality_warning,
        "rejection_reason": rejection_reason,
        "sha256": sha256,
        "model_version": model_version,
        "image_id": image_id,
        "confirmed_diagnosis": confirmed_diagnosis,
        "confirmed_method": confirmed_method,
        "repeat_of_image_id": repeat_of_image_id,
    }


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key)) for key in RESULT_COLUMNS})
    return out.getvalue()


# A spreadsheet runs a cell that starts with one of these as a formula: a file named "=HYPERLINK(...).jpg"
# would become a live link in the dermatologist's spreadsheet (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value  # shown as text; the JSON results keep the name as sent
    return value


def batch_results(batch: Batch) -> list[dict]:
    """One row per image, with the prediction of the newest model that classified it."""
    rows = []
    images = db.session.scalars(
        db.select(Image).where(Image.batch_id == batch.id).order_by(Image.id).options(
            selectinload(Image.predictions).selectinload(Prediction.alert),
            selectinload(Image.predictions).selectinload(Prediction.model_version),
            selectinload(Image.predictions).selectinload(Prediction.repeat_of).selectinload(Prediction.alert),
        )
    )
    images = images.all()
    confirmed = ConfirmedDiagnosis.newest([image.id for image in images])
    for image in images:
        prediction = image.predictions[-1] if image.predictions else None
        label = confirmed.get(image.id)
        rows.append(result_row(
            filename=image.filename, patient_ref=image.patient_ref, lesion_ref=image.lesion_ref,
            status=image.status, sha256=image.sha256,
            predicted_class=prediction.predicted_class if prediction else None,
            melanoma_probability=prediction.melanoma_probability if prediction else None,
            # An alert of an earlier prediction stays the image's alert until it is closed; a repeated picture
            # shares the alert of its first copy.
            alert=any(alert is not None and alert.status != AlertStatus.DISMISSED
                      for alert in [earlier.alert for earlier in image.predictions]
                      + [earlier.repeat_of.alert for earlier in image.predictions if earlier.repeat_of]),
            quality_warning=prediction.quality_warning if prediction else None,
            rejection_reason=image.rejection_reason,
            model_version=prediction.model_version.label if prediction else None, image_id=image.id,
            confirmed_diagnosis=label.diagnosis if label else None, confirmed_method=label.method if label else None,
            repeat_of_image_id=prediction.repeat_of.image_id if prediction and prediction.repeat_of else None,
        ))
    return rows
