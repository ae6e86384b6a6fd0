"""Each hospital's shift, as the serving model sees it: how far the hospital's recent images lie from the model's
training images in the model's own features (worker/classifier/shift.py). Beat sends the task every hour to an
inference worker; a hospital is measured again once it has classified images since its last measurement, or
when another model serves. The figure, and whether it is flagged, is read by web/reliability.py."""

import json
import logging
import time

import numpy as np
from flask import current_app

from models import Image, ModelVersion, ShiftMeasurement, db
from models.batch import ImageStatus
from web.reliability import SHIFT_MIN_IMAGES
from web.storage import ImageStore
from worker.classifier import shift
from worker.classifier.artifacts import CARD_NAME
from worker.classifier.images import decode_images
from worker.registry import resolve_path
from worker.serving import serving_model

log = logging.getLogger(__name__)

# The hospital's newest classified pictures, one image of each, that a measurement reads.
RECENT_IMAGES = 200
# How long one run may measure (a few seconds a hospital on 2 cores), well inside the task's time limit.
BUDGET_SECONDS = 600


def measure_shifts(budget_seconds: float = BUDGET_SECONDS) -> dict:
    """Measure the hospitals with new classified images against the champion's reference, those measured
    longest ago (or never) first, until budget_seconds have passed (the rest wait for the next run); returns
    the hospitals measured, each with its shift AUC, or why nothing could be."""
    deadline = time.monotonic() + budget_seconds
    model = serving_model()
    version = db.session.get(ModelVersion, model.version_id)
    model_dir = resolve_path(version.artifact_path).parent
    # The card on disk may name a reference written after the version was registered (`melanoma models
    # reference`); the stored card is the one registered.
    entry = (version.card or {}).get("shift") or json.loads((model_dir / CARD_NAME).read_text()).get("shift")
    if entry is None:
        return {"measured": {}, "reason": f"{version.label} has no shift reference (`melanoma models reference`)"}
    reference = shift.read_reference(model_dir, entry)
    newest = db.session.execute(db.select(Image.hospital_id, db.func.max(Image.id)).where(
        Image.status == ImageStatus.DONE).group_by(Image.hospital_id)).all()
    latest = dict(db.session.execute(db.select(
        ShiftMeasurement.hospital_id, db.func.max(ShiftMeasurement.last_image_id)).where(
        ShiftMeasurement.model_version_id == version.id).group_by(ShiftMeasurement.hospital_id)).all())
    due = sorted((latest.get(hospital_id, -1), hospital_id) for hospital_id, newest_id in newest
                 if latest.get(hospital_id, -1) < newest_id)
    measured = {}
    for position, (_, hospital_id) in enumerate(due):
        if time.monotonic() > deadline:
            log.info("shift: %d hospitals left for the next run", len(due) - position)
            break
        auc = _measure(model, reference, version.id, hospital_id)
        if auc is not None:
            measured[hospital_id] = auc
    return {"measured": measured}


def _measure(model, reference: shift.Reference, version_id: int, hospital_id: int) -> float | None:
    newest_first = db.session.execute(db.select(Image.id, Image.sha256, Image.storage_path).where(
        Image.hospital_id == hospital_id, Image.status == ImageStatus.DONE).order_by(Image.id.desc())
        .limit(RECENT_IMAGES * 3)).all()
    pictures, seen = [], set()
    for image_id, sha256, path in newest_first:  # a picture sent again counts once
        if sha256 not in seen and len(pictures) < RECENT_IMAGES:
            seen.add(sha256)
            pictures.append((image_id, path))
    store = ImageStore(current_app.config["STORAGE_DIR"])
    decoded = decode_images(store.read, [path for _, path in pictures], model.input_size,
                            current_app.config["IMAGE_FORMATS"], current_app.config["MAX_IMAGE_PIXELS"])
    arrays = [array for array in decoded if not isinstance(array, Exception)]
    if len(arrays) < SHIFT_MIN_IMAGES:
        return None
    auc = reference.shift_auc(*shift.features(model.classifier.model, np.stack(arrays)))
    db.session.add(ShiftMeasurement(hospital_id=hospital_id, model_version_id=version_id, images=len(arrays),
                                    last_image_id=pictures[0][0], auc=auc))
    db.session.commit()
    log.info("hospital %s: shift AUC %.3f on its %d newest pictures", hospital_id, auc, len(arrays))
    return auc
