"""The results table a hospital gets back, as rows and as CSV; shared by the API and `melanoma predict`."""

import csv
import io

RESULT_COLUMNS = ("filename", "status", "predicted_class", "melanoma_probability", "alert", "quality_warning",
                  "rejection_reason", "sha256", "model_version", "image_id", "confirmed_diagnosis",
                  "confirmed_method")


def result_row(filename: str, status: str, sha256: str = "", predicted_class: str | None = None,
               melanoma_probability: float | None = None, alert: bool = False, quality_warning: str | None = None,
               rejection_reason: str | None = None, model_version: str | None = None, image_id: int | None = None,
               confirmed_diagnosis: str | None = None, confirmed_method: str | None = None) -> dict:
    """One image's row. image_id and the confirmed diagnosis (the newest one recorded, with how it was
    confirmed) are there for results from the server, so a hospital can name the image when it posts one."""
    return {
        "filename": filename,
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
