"""Recording confirmed diagnoses of a hospital's own images, row by row: a bad row is refused with its reason
and never drops the good ones. The API and (with the dashboard issue) the alert page write through here."""

import csv
import io
import re
from dataclasses import dataclass, field

from models import AuditEvent, Batch, ConfirmedDiagnosis, Hospital, Image, db
from models.base import MAX_ID
from models.batch import ImageStatus
from models.diagnosis import DIAGNOSES, METHODS

MAX_ROWS = 10_000
CSV_COLUMNS = ("image_id", "sha256", "batch_id", "filename", "diagnosis", "method", "confirmed_by")
SHA256 = re.compile(r"[0-9a-f]{64}")


class RowError(ValueError):
    """Why one row was refused, in words the hospital can act on."""


@dataclass
class Outcome:
    stored: list[dict] = field(default_factory=list)
    unchanged: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)


def rows_from_csv(text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if not reader.fieldnames or "diagnosis" not in reader.fieldnames:
        raise ValueError(f"the CSV needs a header row with diagnosis, method and one of image_id, sha256 or "
                         f"batch_id and filename; columns: {', '.join(CSV_COLUMNS)}")
    return [{key: value for key, value in row.items() if key and value not in (None, "")} for row in reader]


def record(hospital: Hospital, rows: list, actor: str) -> Outcome:
    """Store each row's diagnosis on the images it names (all of the hospital's copies, for a sha256); rows
    are numbered from 1 in the answer. A row the same as the image's newest diagnosis is unchanged."""
    outcome = Outcome()
    for number, row in enumerate(rows, start=1):
        try:
            diagnosis, method, confirmed_by = _values(row)
            images = _images(hospital, row)
        except RowError as refused:
            outcome.refused.append({"row": number, "reason": str(refused)})
            continue
        newest = ConfirmedDiagnosis.newest([image.id for image in images])
        for image in images:
            before = newest.get(image.id)
            entry = {"row": number, "image_id": image.id, "diagnosis": diagnosis, "method": method}
            if before and (before.diagnosis, before.method, before.confirmed_by) == (diagnosis, method, confirmed_by):
                outcome.unchanged.append({**entry, "id": before.id})
                continue
            label = ConfirmedDiagnosis(image_id=image.id, hospital_id=hospital.id, diagnosis=diagnosis,
                                       method=method, confirmed_by=confirmed_by, recorded_by=actor,
                                       replaced=before.diagnosis if before else None)
            db.session.add(label)
            db.session.flush()
            outcome.stored.append({**entry, "id": label.id, "replaced": label.replaced})
    if outcome.stored:
        AuditEvent.record(actor, "diagnoses.recorded", f"hospital:{hospital.id}", stored=len(outcome.stored),
                          refused=len(outcome.refused))
    db.session.commit()
    return outcome


def _values(row) -> tuple[str, str, str | None]:
    if not isinstance(row, dict):
        raise RowError("a row must be an object with diagnosis, method and image_id, sha256 or batch_id and filename")
    diagnosis = str(row.get("diagnosis", "")).strip().lower()
    if diagnosis not in DIAGNOSES:
        raise RowError(f"unknown diagnosis {row.get('diagnosis')!r}; use one of: {', '.join(DIAGNOSES)}")
    method = str(row.get("method", "")).strip().lower()
    if method not in METHODS:
        raise RowError(f"unknown method {row.get('method')!r}; use one of: {', '.join(METHODS)}")
    confirmed_by = row.get("confirmed_by")
    if confirmed_by is not None:
        confirmed_by = str(confirmed_by).strip()[:200] or None
    return diagnosis, method, confirmed_by


def _images(hospital: Hospital, row: dict) -> list[Image]:
    """The hospital's images the row names; another hospital's image is as unknown as one that does not exist."""
    if row.get("image_id") not in (None, ""):
        image_id = _whole_number(row["image_id"], "image_id")
        image = db.session.get(Image, image_id) if image_id <= MAX_ID else None
        if image is None or image.hospital_id != hospital.id:
            raise RowError(f"no image {image_id} for this hospital")
        images = [image]
    elif row.get("sha256"):
        digest = str(row["sha256"]).strip().lower()
        if not SHA256.fullmatch(digest):
            raise RowError(f"sha256 must be 64 hexadecimal characters, got {row['sha256']!r}")
        images = db.session.scalars(db.select(Image).where(Image.hospital_id == hospital.id, Image.sha256 == digest)
                                    .order_by(Image.id)).all()
        if not images:
            raise RowError(f"no image with sha256 {digest} for this hospital")
    elif row.get("batch_id") not in (None, "") and row.get("filename"):
        batch_id = _whole_number(row["batch_id"], "batch_id")
        batch = db.session.get(Batch, batch_id) if batch_id <= MAX_ID else None
        if batch is None or batch.hospital_id != hospital.id:
            raise RowError(f"no batch {batch_id} for this hospital")
        images = db.session.scalars(db.select(Image).where(Image.batch_id == batch.id,
                                                           Image.filename == str(row["filename"]))).all()
        if len(images) != 1:
            raise RowError(f"{len(images) or 'no'} images named {row['filename']!r} in batch {batch_id}"
                           + ("; name it by image_id or sha256" if images else ""))
    else:
        raise RowError("name the image by image_id, by sha256, or by batch_id and filename")
    readable = [image for image in images if image.status != ImageStatus.REJECTED]
    if not readable:
        raise RowError(f"image {images[0].id} could not be read when it was sent ({images[0].rejection_reason}); "
                       "it cannot be labelled")
    return readable


def _whole_number(value, name: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise RowError(f"{name} must be a whole number, got {value!r}") from None
    if number < 1:
        raise RowError(f"{name} must be positive, got {number}")
    return number
