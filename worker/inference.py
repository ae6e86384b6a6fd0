"""Classify a chunk of stored images with the serving model and write predictions and alerts."""

import logging

from flask import current_app
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from models import Alert, AuditEvent, Batch, Image, Prediction, db
from models.batch import ImageStatus
from models.prediction import AlertStatus
from web.queue import EXPLAIN_ALERT, EXPLAIN_QUEUE
from web.storage import ImageStore
from worker.classifier.choices import MELANOMA
from worker.classifier.images import UnreadableImage, decode_images
from worker.classifier.quality import measure_quality, quality_warning
from worker.serving import serving_model, version_model

log = logging.getLogger(__name__)

# What the database going away raises (psycopg's and SQLite's errors, as SQLAlchemy wraps them): the task
# retries, and nothing is recorded against the images.
OUTAGES = (OperationalError, InterfaceError)


class RetryImages(Exception):
    """Some images of a chunk failed on their own and have attempts left: retry those, and only those."""

    def __init__(self, image_ids: list[int], reason: str):
        super().__init__(reason)
        self.image_ids = image_ids


def classify_images(image_ids: list[int], max_attempts: int = 3) -> dict:
    """Predict every queued image among image_ids as one array; safe to run twice on the same ids.

    A chunk that comes back (its worker died, or it raised) is classified one image at a time, each image's
    attempt counted just before its own turn: an image that kills the worker or raises then fails alone,
    and the rest of its chunk is classified.
    """
    model = serving_model()
    if not _delivered_before(image_ids):
        _count_attempt(image_ids, max_attempts)
        return _classify_with_retries(model, image_ids)
    totals = {"predicted": 0, "rejected": 0, "alerts": 0, "repeats": 0}
    retry, reason = [], ""
    for image_id in sorted(image_ids):
        _count_attempt([image_id], max_attempts)
        try:
            result = _classify_with_retries(model, [image_id])
        except OUTAGES:
            raise
        except Exception as error:
            db.session.rollback()
            log.exception("inference failed for image %s", image_id)
            reason = f"inference failed: {error!r}"
            retry += record_failure([image_id], reason, max_attempts)
            continue
        totals = {key: totals[key] + result[key] for key in totals}
    if retry:
        raise RetryImages(retry, reason)
    return totals


def _delivered_before(image_ids: list[int]) -> bool:
    """Whether a delivery already began on any waiting image of the chunk and did not finish it."""
    return db.session.scalar(db.select(db.func.count(Image.id)).where(
        Image.id.in_(image_ids), Image.status == ImageStatus.QUEUED, Image.attempts > 0)) > 0


# PostgreSQL's code for a deadlock it broke by aborting this transaction.
DEADLOCK = "40P01"


def _classify_with_retries(model, image_ids: list[int]) -> dict:
    # Each conflict means another run wrote at least one more of these images (a run going one image at a
    # time may write them one by one under us), so one pass more than there are images always suffices.
    tries = len(image_ids) + 2
    for _ in range(tries):
        try:
            return _classify(model, image_ids)
        except (IntegrityError, OperationalError) as error:
            # A concurrent run wrote some of these first, or (one image at a time against a whole chunk) took
            # the same rows in another order; the next pass skips what it wrote and keeps the rest.
            if isinstance(error, OperationalError) and getattr(error.orig, "sqlstate", None) != DEADLOCK:
                raise
            db.session.rollback()
            log.info("predictions for some of %s were written by another run; trying the rest again", image_ids)
    raise RuntimeError(f"could not write predictions for {image_ids} after {tries} tries")


def _count_attempt(image_ids: list[int], max_attempts: int) -> None:
    """Count this delivery on each waiting image before touching it, so an image that kills the worker
    every time (a message redelivered after each crash) ends as failed, with the reason, not in a loop."""
    db.session.execute(db.update(Image).where(Image.id.in_(image_ids), Image.status == ImageStatus.QUEUED)
                       .values(attempts=Image.attempts + 1))
    exhausted = db.session.scalars(db.select(Image).where(
        Image.id.in_(image_ids), Image.status == ImageStatus.QUEUED, Image.attempts > max_attempts)).all()
    for image in exhausted:
        image.status = ImageStatus.FAILED
        image.rejection_reason = (f"the worker stopped {max_attempts} times while classifying this image "
                                  "(a crash or out of memory); please resend it")
    db.session.commit()
    if exhausted:
        _finish_batches({image.batch_id for image in exhausted})


def _classify(model, image_ids: list[int]) -> dict:
    store = ImageStore(current_app.config["STORAGE_DIR"])
    images = db.session.scalars(
        db.select(Image).where(Image.id.in_(image_ids), Image.status == ImageStatus.QUEUED).order_by(Image.id)
    ).all()
    already = set(db.session.scalars(
        db.select(Prediction.image_id).where(Prediction.image_id.in_(image_ids),
                                             Prediction.model_version_id == model.version_id)
    ))
    pending, repeats = [], []
    _lock_pictures([image for image in images if image.id not in already])
    earlier = _earlier_predictions(model, [image for image in images if image.id not in already])
    for image in images:
        if image.id in already:
            image.status = ImageStatus.DONE
        elif (image.hospital_id, image.sha256) in earlier:
            repeats.append(image)
        else:
            # Only the first copy of a picture in the chunk is predicted; the others repeat its result.
            earlier[(image.hospital_id, image.sha256)] = None
            pending.append(image)
    arrays, to_predict, rejected = [], [], 0
    decoded = decode_images(store.read, [image.storage_path for image in pending], model.input_size,
                            current_app.config["IMAGE_FORMATS"], current_app.config["MAX_IMAGE_PIXELS"])
    for image, array in zip(pending, decoded, strict=True):
        if isinstance(array, UnreadableImage):
            image.status, image.rejection_reason = ImageStatus.REJECTED, str(array)
            rejected += 1
        elif isinstance(array, FileNotFoundError):
            image.status = ImageStatus.FAILED
            image.rejection_reason = "the stored file is missing from image storage; please resend this image"
        elif isinstance(array, Exception):
            raise array
        else:
            arrays.append(array)
            to_predict.append(image)
    # The whole chunk as one array: INFERENCE_CHUNK_SIZE is the batch the model sees.
    probabilities = model.classifier.predict(arrays, batch_size=max(1, len(arrays)))
    new_alerts = []
    for image, array, row in zip(to_predict, arrays, probabilities, strict=True):
        prediction = _prediction(model, image, array, row)
        earlier[(image.hospital_id, image.sha256)] = prediction
        if prediction.melanoma_probability >= model.alert_threshold:
            alert = Alert(prediction=prediction, hospital_id=image.hospital_id,
                          melanoma_probability=prediction.melanoma_probability, threshold=model.alert_threshold)
            db.session.add(alert)
            new_alerts.append(alert)
        image.status, image.rejection_reason = ImageStatus.DONE, None
    db.session.flush()
    for image in repeats:
        first = earlier.get((image.hospital_id, image.sha256))
        if first is None:  # its first copy in this chunk could not be read: neither can this one
            image.status = ImageStatus.REJECTED
            image.rejection_reason = next(other.rejection_reason for other in pending if other.sha256 == image.sha256
                                          and other.hospital_id == image.hospital_id and other.rejection_reason)
            continue
        db.session.add(Prediction(
            image_id=image.id, model_version_id=model.version_id, probabilities=first.probabilities,
            predicted_class=first.predicted_class, melanoma_probability=first.melanoma_probability,
            sharpness=first.sharpness, quality_warning=first.quality_warning, repeat_of_id=first.id))
        image.status, image.rejection_reason = ImageStatus.DONE, None
    db.session.commit()
    _finish_batches({image.batch_id for image in images})
    if new_alerts:
        # Heatmaps are drawn after the results are in, so they never delay a batch.
        celery_app = current_app.extensions["celery"]
        for alert in new_alerts:
            celery_app.send_task(EXPLAIN_ALERT, args=[alert.id], queue=EXPLAIN_QUEUE)
    return {"predicted": len(to_predict), "rejected": rejected, "alerts": len(new_alerts), "repeats": len(repeats)}


def _lock_pictures(images: list[Image]) -> None:
    """On PostgreSQL, hold a transaction lock on each (hospital, picture) until this chunk commits: a worker
    classifying the same picture for the same hospital at the same time waits, then finds this one's result
    and repeats it, so two copies never raise two alerts. Keys in order, so two chunks never deadlock; a
    key shared by two pictures (a 60-bit hash) only makes one wait for the other. SQLite needs none: it has
    one writer at a time, and the embedded run one worker."""
    if db.session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted({(int(image.sha256[:15], 16) << 3) ^ image.hospital_id for image in images})
    for key in keys:
        db.session.execute(db.select(db.func.pg_advisory_xact_lock(key)))


def _earlier_predictions(model, images: list[Image]) -> dict:
    """(hospital id, sha256) -> the serving model's first prediction of that picture for that hospital, for the
    pictures among these that it has classified before: a picture sent again gets that result, and no alert."""
    if not images:
        return {}
    found = db.session.execute(
        db.select(Image.hospital_id, Image.sha256, Prediction).join(Prediction, Prediction.image_id == Image.id)
        .where(Prediction.model_version_id == model.version_id, Prediction.repeat_of_id.is_(None),
               Image.hospital_id.in_({image.hospital_id for image in images}),
               Image.sha256.in_({image.sha256 for image in images})).order_by(Prediction.id)).all()
    earlier = {}
    for hospital_id, sha256, prediction in found:
        earlier.setdefault((hospital_id, sha256), prediction)
    return earlier


def _prediction(model, image: Image, array, row) -> Prediction:
    """The model's prediction of the image from its decoded array and probabilities, added to the session."""
    quality = measure_quality(array)
    prediction = Prediction(
        image_id=image.id, model_version_id=model.version_id,
        probabilities={name: round(float(p), 6) for name, p in zip(model.class_names, row, strict=True)},
        predicted_class=model.class_names[int(row.argmax())],
        melanoma_probability=float(row[model.class_names.index(MELANOMA)]),
        sharpness=quality.sharpness, quality_warning=quality_warning(quality, model.quality_limits),
    )
    db.session.add(prediction)
    return prediction


def _scores(model, items: list, storage_path) -> list[tuple]:
    """(item, decoded array, probabilities) for each item whose stored picture (storage_path(item)) decodes."""
    store = ImageStore(current_app.config["STORAGE_DIR"])
    decoded = decode_images(store.read, [storage_path(item) for item in items], model.input_size,
                            current_app.config["IMAGE_FORMATS"], current_app.config["MAX_IMAGE_PIXELS"])
    readable = [(item, array) for item, array in zip(items, decoded, strict=True) if not isinstance(array, Exception)]
    rows = model.classifier.predict([array for _, array in readable]) if readable else []
    return [(item, array, row) for (item, array), row in zip(readable, rows, strict=True)]


def rescore_alerts(alert_ids: list[int]) -> dict:
    """Score the pictures of these open alerts with the champion, beside their earlier predictions (which stay):
    each alert moves to the champion's prediction, with its probability and threshold, and its heatmap is drawn
    again by it; an alert the champion scores under its threshold is dismissed. The audit trail keeps the
    earlier figures. Alerts the champion already scored, or no longer open, are left as they are."""
    model = serving_model()
    alerts = [alert for alert in db.session.scalars(
        db.select(Alert).where(Alert.id.in_(alert_ids), Alert.status == AlertStatus.OPEN).order_by(Alert.id))
        if alert.prediction.model_version_id != model.version_id]
    readable = _scores(model, alerts, lambda alert: alert.prediction.image.storage_path)
    redraw, dismissed = [], 0
    for alert, array, row in readable:
        earlier = alert.prediction
        prediction = db.session.scalar(db.select(Prediction).where(
            Prediction.image_id == earlier.image_id, Prediction.model_version_id == model.version_id)) \
            or _prediction(model, earlier.image, array, row)
        if prediction.alert is not None:  # the same picture's alert from the champion exists already
            alert.status = AlertStatus.DISMISSED
        else:
            alert.prediction = prediction
            alert.melanoma_probability, alert.threshold = prediction.melanoma_probability, model.alert_threshold
            alert.heatmap_path, alert.heatmap_attempts, alert.heatmap_error = None, 0, None
            if prediction.melanoma_probability < model.alert_threshold:
                alert.status = AlertStatus.DISMISSED
            else:
                redraw.append(alert)
        dismissed += alert.status == AlertStatus.DISMISSED
        AuditEvent.record("rescore", "alert.rescored", f"alert:{alert.id}", model=model.version_id,
                          earlier_model=earlier.model_version_id, earlier_probability=earlier.melanoma_probability,
                          probability=prediction.melanoma_probability, threshold=model.alert_threshold,
                          status=alert.status)
    db.session.commit()
    celery_app = current_app.extensions["celery"]
    for alert in redraw:
        celery_app.send_task(EXPLAIN_ALERT, args=[alert.id], queue=EXPLAIN_QUEUE)
    return {"rescored": len(readable), "dismissed": dismissed, "unreadable": len(alerts) - len(readable)}


def score_images(image_ids: list[int]) -> dict:
    """Predictions by the champion of these images where it has none, raising no alert: the held-back
    confirmed images a hospital's reliability is measured on (web/reliability.py), after a promotion."""
    model = serving_model()
    done = set(db.session.scalars(db.select(Prediction.image_id).where(
        Prediction.image_id.in_(image_ids), Prediction.model_version_id == model.version_id)))
    images = [image for image in db.session.scalars(db.select(Image).where(Image.id.in_(image_ids)).order_by(Image.id))
              if image.id not in done]
    readable = _scores(model, images, lambda image: image.storage_path)
    for image, array, row in readable:
        _prediction(model, image, array, row)
    db.session.commit()
    return {"scored": len(readable), "unreadable": len(images) - len(readable)}


def explain_alert(alert_id: int, max_attempts: int = 3) -> str | None:
    """Draw and store the occlusion heatmap of an alert's image with the model that raised the alert; does
    nothing if it is already there, or once max_attempts deliveries have failed (the reason stays on the
    alert)."""
    from worker.classifier.explain import explain_bytes

    alert = db.session.get(Alert, alert_id)
    if alert is None or alert.heatmap_path or alert.heatmap_attempts >= max_attempts:
        return alert.heatmap_path if alert else None
    alert.heatmap_attempts += 1
    db.session.commit()
    store = ImageStore(current_app.config["STORAGE_DIR"])
    try:
        model = version_model(alert.prediction.model_version_id)
        png, _ = explain_bytes(model.classifier, store.read(alert.prediction.image.storage_path))
    except Exception as error:
        db.session.rollback()
        alert.heatmap_error = repr(error)[:2000]
        db.session.commit()
        raise
    _, alert.heatmap_path = store.put(png)
    alert.heatmap_error = None
    db.session.commit()
    return alert.heatmap_path


def record_failure(image_ids: list[int], reason: str, max_attempts: int) -> list[int]:
    """Record why an attempt failed on each queued image; images out of attempts become failed.

    Returns the ids still worth retrying.
    """
    images = db.session.scalars(
        db.select(Image).where(Image.id.in_(image_ids), Image.status == ImageStatus.QUEUED)
    ).all()
    retry = []
    for image in images:
        image.rejection_reason = reason[:2000]
        if image.attempts >= max_attempts:
            image.status = ImageStatus.FAILED
        else:
            retry.append(image.id)
    db.session.commit()
    _finish_batches({image.batch_id for image in images})
    return retry


def _finish_batches(batch_ids: set[int]) -> None:
    for batch_id in batch_ids:
        batch = db.session.get(Batch, batch_id)
        if batch is not None:
            batch.finish_if_complete()
    db.session.commit()
