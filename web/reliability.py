"""How far a hospital can trust its alerts: the serving model's sensitivity and specificity at its threshold on
the hospital's held-back confirmed images (the share retraining never learns from, models/diagnosis.py), with
95 % intervals and counts, and a plain sentence where its melanomas are missed more often than the target
allows. The champion scores those images when it is promoted (worker/gate.py), and `melanoma rescore
--held-back` scores any it has not.

And the hospital's shift: how well a classifier tells its recent images from the serving model's training images,
in the model's own features (an AUC: 0.5 when it cannot; worker/shift.py measures it every hour). A shift
of SHIFT_LIMIT or more, on at least SHIFT_MIN_IMAGES pictures, brings the same sentence."""

import math

from flask import current_app

from models import Hospital, ModelVersion, Prediction, ShiftMeasurement, db
from models.diagnosis import confirmed_pictures, held_back

MELANOMA = "melanoma"
WARNING = "alerts are less reliable for this hospital's images: confirm diagnoses to adapt the model"
# Between the two: random samples of the shipped model's own test split measured 0.32-0.63 (50-200 pictures, any
# mix of diagnoses), those of the two hospitals it never saw 0.70-0.86 (bench/shift.py, docs/benchmarks.md).
SHIFT_LIMIT = 0.67
SHIFT_MIN_IMAGES = 50


def wilson_interval(successes: int, total: int, z: float = 1.96) -> list[float] | None:
    """The Wilson score interval of a proportion (95 % by default); None without any trials."""
    if total == 0:
        return None
    share = successes / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    spread = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - spread), 4), round(min(1.0, centre + spread), 4)]


def held_back_pictures(hospital_id: int | None = None) -> list[tuple]:
    """(image, diagnosis) of the held-back confirmed pictures, of one hospital or of all."""
    percent = current_app.config["HOLDBACK_PERCENT"]
    return [(image, diagnosis) for image, diagnosis in confirmed_pictures(hospital_id)
            if held_back(image.sha256, percent)]


def reliability(hospital: Hospital) -> dict:
    champion = ModelVersion.champion()
    pictures = held_back_pictures(hospital.id)
    scores = dict(db.session.execute(db.select(Prediction.image_id, Prediction.melanoma_probability).where(
        Prediction.image_id.in_([image.id for image, _ in pictures]),
        Prediction.model_version_id == (champion.id if champion else None))).all())
    scored = [(diagnosis == MELANOMA, scores[image.id]) for image, diagnosis in pictures if image.id in scores]
    threshold = champion.alert_threshold if champion else None
    melanomas = [score for is_melanoma, score in scored if is_melanoma]
    others = [score for is_melanoma, score in scored if not is_melanoma]
    found = sum(score >= threshold for score in melanomas)
    cleared = sum(score < threshold for score in others)
    target = (champion.card or {}).get("target_sensitivity", 0.9) if champion else None
    sensitivity = found / len(melanomas) if melanomas else None
    enough = len(melanomas) >= current_app.config["GATE_MIN_MELANOMAS"]
    short = enough and sensitivity is not None and sensitivity < target
    shift = latest_shift(hospital.id, champion.id) if champion else None
    return {
        "hospital": hospital.name,
        "model": champion.label if champion else None,
        "alert_threshold": threshold,
        "held_back_images": len(pictures),
        "scored_by_this_model": len(scored),
        "melanomas": len(melanomas),
        "other_lesions": len(others),
        "sensitivity": sensitivity,
        "sensitivity_interval_95": wilson_interval(found, len(melanomas)),
        "specificity": cleared / len(others) if others else None,
        "specificity_interval_95": wilson_interval(cleared, len(others)),
        "target_sensitivity": target,
        "enough_melanomas_to_tell": enough,
        "shift": shift,
        "warning": WARNING if short or (shift and shift["flagged"]) else None,
    }


def latest_shift(hospital_id: int, version_id: int) -> dict | None:
    """The newest measurement of the hospital's shift by this model version, flagged where it is too far."""
    measurement = db.session.scalar(db.select(ShiftMeasurement).where(
        ShiftMeasurement.hospital_id == hospital_id, ShiftMeasurement.model_version_id == version_id)
        .order_by(ShiftMeasurement.id.desc()).limit(1))
    if measurement is None:
        return None
    return {"auc": measurement.auc, "images": measurement.images, "measured_at": measurement.measured_at.isoformat(),
            "limit": SHIFT_LIMIT, "flagged": measurement.auc >= SHIFT_LIMIT and measurement.images >= SHIFT_MIN_IMAGES}
