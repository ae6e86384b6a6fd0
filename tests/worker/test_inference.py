"""The inference task, run in this process: idempotent writes, alerts at the threshold, failures recorded."""

import io

import pytest
import redis
from PIL import Image as PILImage

from models import Alert, Batch, Image, ModelVersion, Prediction, db
from tests.conftest import dataset_images, make_hospital
from web.ingest import Upload, create_batch
from web.queue import CLASSIFY_IMAGES
from web.storage import ImageStore
from worker import inference


def _batch(files: list[tuple[str, bytes]]) -> Batch:
    hospital, _ = make_hospital()
    batch, _ = create_batch(hospital, [Upload(name, data) for name, data in files])
    return batch


def _run_task(app, image_ids):
    import worker.tasks  # noqa: F401  (registers the tasks on this app)

    return app.extensions["celery"].tasks[CLASSIFY_IMAGES].apply(args=[image_ids]).get()


def _real_images(count: int = 4) -> list[tuple[str, bytes]]:
    paths = dataset_images("melanoma", count // 2) + dataset_images("nevus", count - count // 2)
    return [(path.name, path.read_bytes()) for path in paths]


def test_running_the_same_task_twice_writes_one_prediction_per_image(app):
    batch = _batch(_real_images(4))
    ids = [image.id for image in batch.images]
    first = _run_task(app, ids)
    # Put the images back in the queue, as a redelivered message after a worker crash would find them.
    db.session.execute(db.update(Image).where(Image.id.in_(ids)).values(status="queued"))
    db.session.commit()
    second = _run_task(app, ids)
    assert first["predicted"] == 4 and second["predicted"] == 0
    counts = db.session.execute(
        db.select(Prediction.image_id, db.func.count()).group_by(Prediction.image_id)).all()
    assert sorted(count for _, count in counts) == [1, 1, 1, 1]
    assert db.session.scalar(db.select(db.func.count(Alert.id))) == first["alerts"]
    db.session.expire_all()
    assert db.session.get(Batch, batch.id).status == "done"


def test_alerts_are_raised_exactly_at_and_above_the_threshold(app):
    batch = _batch(_real_images(6))
    ids = [image.id for image in batch.images]
    # Move the threshold to the middle of this batch's scores, so both sides of it are exercised.
    _run_task(app, ids[:1])
    champion = ModelVersion.champion()
    db.session.execute(db.update(Image).where(Image.id.in_(ids)).values(status="queued"))
    db.session.execute(db.delete(Alert))
    db.session.execute(db.delete(Prediction))
    db.session.commit()
    from worker.classifier.images import decode_image
    from worker.serving import serving_model

    store = ImageStore(app.config["STORAGE_DIR"])
    model = serving_model()
    arrays = [decode_image(store.read(image.storage_path), model.input_size) for image in batch.images]
    scores = sorted(model.classifier.predict(arrays)[:, model.class_names.index("melanoma")])
    champion.alert_threshold = float(scores[3])
    db.session.commit()

    _run_task(app, ids)
    predictions = db.session.scalars(db.select(Prediction)).all()
    alerted = {alert.prediction_id for alert in db.session.scalars(db.select(Alert))}
    assert len(alerted) == 3
    for prediction in predictions:
        assert (prediction.id in alerted) == (prediction.melanoma_probability >= champion.alert_threshold)


def test_a_truncated_image_is_rejected_by_the_worker_with_its_reason(app):
    full = _real_images(1)[0][1]
    cut = io.BytesIO(full[: len(full) // 2])
    with PILImage.open(cut) as image:  # the header still reads, so the web accepted it
        assert image.size == (180, 180)
    batch = _batch([("cut.jpg", full[: len(full) // 2])])
    image = batch.images[0]
    assert image.status == "queued"
    _run_task(app, [image.id])
    db.session.expire_all()
    image = db.session.get(Image, image.id)
    assert image.status == "rejected" and "damaged image data" in image.rejection_reason
    assert db.session.get(Batch, batch.id).status == "done"


def test_blurred_unevenly_lit_and_overexposed_pictures_get_quality_warnings_the_hospital_sees(app):
    from PIL import ImageFilter

    from web.api.routes import batch_results
    from worker.classifier.perturbations import PERTURBATIONS

    path = dataset_images("nevus", 2)[1]  # a lesion with skin around it: vignetting shows at the edge
    name, sharp = path.name, path.read_bytes()
    blurred, vignetted, overexposed = io.BytesIO(), io.BytesIO(), io.BytesIO()
    PILImage.open(io.BytesIO(sharp)).filter(ImageFilter.GaussianBlur(2)).save(blurred, format="PNG")
    PERTURBATIONS["vignetting"](PILImage.open(io.BytesIO(sharp))).save(vignetted, format="PNG")
    PILImage.open(io.BytesIO(sharp)).point(lambda level: min(255, int(level * 1.5))).save(overexposed, format="PNG")
    batch = _batch([(name, sharp), ("blurred.png", blurred.getvalue()), ("vignetted.png", vignetted.getvalue()),
                    ("overexposed.png", overexposed.getvalue())])
    result = _run_task(app, [image.id for image in batch.images])
    assert result["predicted"] == 4
    db.session.expire_all()
    by_name = {image.filename: image.predictions[0] for image in db.session.get(Batch, batch.id).images}
    assert by_name[name].quality_warning is None
    assert "blurred or low resolution" in by_name["blurred.png"].quality_warning
    assert by_name["blurred.png"].sharpness < by_name[name].sharpness
    assert "unevenly lit" in by_name["vignetted.png"].quality_warning
    assert "blurred" not in by_name["vignetted.png"].quality_warning
    assert by_name["overexposed.png"].quality_warning.startswith("overexposed")
    batch = db.session.get(Batch, batch.id)
    assert batch.counts()["quality_warnings"] == 3
    rows = {row["filename"]: row for row in batch_results(batch)}
    assert rows[name]["quality_warning"] is None and rows[name]["status"] == "done"
    assert rows["blurred.png"]["quality_warning"] == by_name["blurred.png"].quality_warning
    assert rows["vignetted.png"]["quality_warning"] == by_name["vignetted.png"].quality_warning


def test_workers_use_the_quality_limits_the_champions_card_has_now(app):
    from models import ModelVersion
    from worker.classifier.perturbations import PERTURBATIONS

    path = dataset_images("nevus", 2)[1]
    vignetted = io.BytesIO()
    PERTURBATIONS["vignetting"](PILImage.open(path)).save(vignetted, format="PNG")
    first = _batch([("first.png", vignetted.getvalue())])
    _run_task(app, [image.id for image in first.images])  # the worker has loaded the champion
    champion = ModelVersion.champion()
    limit = champion.card["illumination_floor"]
    # As a database that registered the model before its card had the limit.
    champion.card = {key: value for key, value in champion.card.items() if key != "illumination_floor"}
    db.session.commit()
    second = _batch([("second.png", vignetted.getvalue())])
    _run_task(app, [image.id for image in second.images])
    db.session.expire_all()
    assert "unevenly lit" in db.session.get(Batch, first.id).images[0].predictions[0].quality_warning
    assert db.session.get(Batch, second.id).images[0].predictions[0].quality_warning is None
    champion = ModelVersion.champion()
    champion.card = {**champion.card, "illumination_floor": limit}  # registered again: the limit is back
    db.session.commit()
    third = _batch([("third.png", vignetted.getvalue())])
    _run_task(app, [image.id for image in third.images])
    db.session.expire_all()
    assert "unevenly lit" in db.session.get(Batch, third.id).images[0].predictions[0].quality_warning


def test_a_missing_stored_file_fails_the_image_with_a_reason(app, tmp_path):
    batch = _batch(_real_images(2))
    lost = batch.images[0]
    (ImageStore(app.config["STORAGE_DIR"]).root / lost.storage_path).unlink()
    _run_task(app, [image.id for image in batch.images])
    db.session.expire_all()
    lost = db.session.get(Image, lost.id)
    assert lost.status == "failed" and "missing" in lost.rejection_reason
    assert db.session.get(Image, batch.images[1].id).status == "done"


def test_failures_are_counted_and_become_failed_after_the_last_attempt(app):
    batch = _batch(_real_images(2))
    ids = [image.id for image in batch.images]
    for attempt in range(1, 4):
        db.session.execute(db.update(Image).values(attempts=attempt))  # as each delivery counts itself
        retry = inference.record_failure(ids, "model exploded", max_attempts=3)
        assert retry == (ids if attempt < 3 else [])
    db.session.expire_all()
    for image_id in ids:
        image = db.session.get(Image, image_id)
        assert image.status == "failed" and image.attempts == 3 and image.rejection_reason == "model exploded"
    assert db.session.get(Batch, batch.id).status == "done"


def test_an_alert_heatmap_is_drawn_once_and_stored(app):
    from PIL import Image as PILImage

    from web.queue import EXPLAIN_ALERT

    batch = _batch(_real_images(2))
    ids = [image.id for image in batch.images]
    champion_threshold_zero(app, ids)
    alert = db.session.scalars(db.select(Alert)).first()
    task = app.extensions["celery"].tasks[EXPLAIN_ALERT]
    path = task.apply(args=[alert.id]).get()
    assert task.apply(args=[alert.id]).get() == path
    png = ImageStore(app.config["STORAGE_DIR"]).read(path)
    with PILImage.open(io.BytesIO(png)) as heatmap:
        assert heatmap.format == "PNG" and heatmap.size == (180, 180)


def test_a_heatmap_that_cannot_be_drawn_stops_being_sent_and_the_api_says_why(app):
    import datetime as dt

    import worker.tasks  # noqa: F401
    from models import utcnow
    from web.queue import EXPLAIN_ALERT, REQUEUE_STALE

    hospital, key = make_hospital()
    batch, _ = create_batch(hospital, [Upload(name, data) for name, data in _real_images(2)])
    champion_threshold_zero(app, [image.id for image in batch.images])
    lost, drawable = db.session.scalars(db.select(Alert).order_by(Alert.id)).all()
    (ImageStore(app.config["STORAGE_DIR"]).root / lost.prediction.image.storage_path).unlink()
    app.extensions["celery"].tasks[EXPLAIN_ALERT].apply(args=[lost.id])  # eager: its retries run here
    db.session.expire_all()
    lost = db.session.get(Alert, lost.id)
    assert lost.heatmap_path is None and lost.heatmap_attempts == app.config["MAX_ATTEMPTS"]
    assert "FileNotFoundError" in lost.heatmap_error

    broker = redis.Redis.from_url(app.config["REDIS_URL"])
    broker.delete("explain", "inference")
    db.session.execute(db.update(Alert).values(created_at=utcnow() - dt.timedelta(hours=1)))
    db.session.commit()
    assert app.extensions["celery"].tasks[REQUEUE_STALE].apply().get()["heatmaps"] == 1  # the drawable one
    answer = app.test_client().get(f"/api/v1/alerts/{lost.id}/heatmap", headers={"X-API-Key": key})
    assert answer.status_code == 404 and "could not be drawn" in answer.get_json()["error"]
    assert "FileNotFoundError" in answer.get_json()["error"]


def test_a_heatmap_is_drawn_by_the_model_that_raised_the_alert_after_another_is_promoted(app, tiny_model):
    from web.queue import EXPLAIN_ALERT
    from worker.registry import register_model

    batch = _batch(_real_images(2))
    champion_threshold_zero(app, [image.id for image in batch.images])
    alert = db.session.scalars(db.select(Alert).order_by(Alert.id)).first()
    task = app.extensions["celery"].tasks[EXPLAIN_ALERT]
    store = ImageStore(app.config["STORAGE_DIR"])
    drawn_by_its_model = store.read(task.apply(args=[alert.id]).get())
    # Draw it again after a different model became champion, as a heatmap queued before a promotion would be.
    db.session.execute(db.update(Alert).where(Alert.id == alert.id).values(heatmap_path=None, heatmap_attempts=0))
    db.session.commit()
    register_model(tiny_model[0], promote=True)
    drawn_again = store.read(task.apply(args=[alert.id]).get())
    db.session.expire_all()
    assert db.session.get(Alert, alert.id).heatmap_attempts == 1  # drawn anew, not the stored one returned
    assert drawn_again == drawn_by_its_model


def test_a_champion_that_cannot_be_loaded_leaves_images_queued_with_the_reason(app):
    from web.config import DEFAULT_MODEL_DIR

    batch = _batch(_real_images(2))
    ids = [image.id for image in batch.images]
    broken = ModelVersion(name="melanoma-cnn", version="tampered", artifact_path=str(DEFAULT_MODEL_DIR / "model.keras"),
                          artifact_sha256="f" * 64, class_names=["melanoma"], input_size=32, alert_threshold=0.5)
    db.session.add(broken)
    broken.promote()
    db.session.commit()
    import celery.exceptions

    with pytest.raises(celery.exceptions.MaxRetriesExceededError):  # eager: its retries run here, then it stops
        _run_task(app, ids)
    db.session.expire_all()
    for image_id in ids:  # nothing failed for the server's fault: the sweep sends them again later
        image = db.session.get(Image, image_id)
        assert image.status == "queued" and image.attempts == 0
        assert "does not match the registered hash" in image.rejection_reason


def champion_threshold_zero(app, ids):
    """Classify with every image alerting, so alert paths run whatever the model says."""
    _run_task(app, ids[:0])
    ModelVersion.champion().alert_threshold = 0.0
    db.session.commit()
    _run_task(app, ids)


def test_an_image_whose_deliveries_keep_dying_ends_failed_not_in_a_loop(app):
    batch = _batch(_real_images(2))
    crashing, fine = batch.images
    # Three deliveries already began on it and never finished (the worker process died each time).
    crashing.attempts = 3
    db.session.commit()
    result = _run_task(app, [crashing.id, fine.id])
    db.session.expire_all()
    crashing, fine = db.session.get(Image, crashing.id), db.session.get(Image, fine.id)
    assert crashing.status == "failed" and "worker stopped 3 times" in crashing.rejection_reason
    assert fine.status == "done" and fine.attempts == 1 and result["predicted"] == 1
    assert db.session.get(Batch, batch.id).status == "done"


def test_an_image_that_keeps_failing_fails_alone_and_the_rest_of_its_chunk_is_classified(app):
    batch = _batch(_real_images(4))
    broken = batch.images[1]
    # A storage fault that no retry cures: the stored file is now a directory, so reading it raises.
    path = ImageStore(app.config["STORAGE_DIR"]).root / broken.storage_path
    path.unlink()
    path.mkdir()
    try:
        _run_task(app, [image.id for image in batch.images])  # eager: its retries run before it returns
    finally:
        path.rmdir()
    db.session.expire_all()
    images = {image.id: image for image in db.session.get(Batch, batch.id).images}
    assert images.pop(broken.id).status == "failed"
    assert db.session.get(Image, broken.id).attempts == app.config["MAX_ATTEMPTS"]
    assert "IsADirectoryError" in db.session.get(Image, broken.id).rejection_reason
    assert [image.status for image in images.values()] == ["done"] * 3
    assert all(len(image.predictions) == 1 for image in images.values())
    assert db.session.get(Batch, batch.id).status == "done"


def classify_at_once(app, chunks: list[list[int]]) -> list[dict]:
    """Run the inference task on each chunk in a thread of its own, all started together, as workers would;
    the results of each, any error failing the test."""
    import threading

    start, results, errors = threading.Barrier(len(chunks)), [], []

    def run(ids):
        with app.app_context():
            try:
                start.wait()
                results.append(inference.classify_images(ids))
            except Exception as error:  # reported below; the test fails on any
                errors.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(ids,)) for ids in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def test_two_runs_of_one_task_at_the_same_time_write_one_prediction_per_image(app, backend):
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers, so the two runs cannot overlap there")
    batch = _batch(_real_images(6))
    ids = [image.id for image in batch.images]
    _run_task(app, ids[:0])  # load the model once, outside the race
    results = classify_at_once(app, [ids, ids])
    counts = db.session.execute(
        db.select(Prediction.image_id, db.func.count()).group_by(Prediction.image_id)).all()
    assert sorted(count for _, count in counts) == [1] * 6
    assert sum(result["predicted"] for result in results) == 6


def test_the_web_and_the_worker_read_images_by_one_rule_the_settings_name(app):
    from tests.conftest import make_png
    from web.ingest import check_image

    def web_reason(data: bytes) -> str | None:
        return check_image(data, 1 << 20, formats=app.config["IMAGE_FORMATS"],
                           max_pixels=app.config["MAX_IMAGE_PIXELS"])

    picture = make_png(64, 48)
    batch = _batch([("picture.png", picture)])  # accepted under the default rule
    assert web_reason(picture) is None
    app.config["MAX_IMAGE_PIXELS"] = 64 * 48 - 1  # a deployment tightens the rule before the worker gets to it
    _run_task(app, [image.id for image in batch.images])
    db.session.expire_all()
    image = db.session.get(Batch, batch.id).images[0]
    assert image.status == "rejected"
    assert image.rejection_reason == web_reason(picture) == "image is 64x48, larger than we accept"
