"""The same picture twice is one case: a picture the serving model already classified for the hospital repeats
that result and raises no second alert, within a chunk, across batches, and with two workers at once."""

import pytest

from models import Alert, Batch, Prediction, db
from tests.conftest import make_hospital
from tests.worker.test_inference import _batch, _real_images, _run_task, champion_threshold_zero, classify_at_once
from web.ingest import Upload, create_batch


def test_a_picture_sent_again_repeats_its_result_and_raises_no_second_alert(app):
    from web.results import batch_results

    files = _real_images(2)
    first = _batch(files)
    champion_threshold_zero(app, [image.id for image in first.images])
    assert db.session.scalar(db.select(db.func.count(Alert.id))) == 2
    hospital = first.images[0].batch.hospital
    # The same two pictures again, under other names, one of them twice in one chunk; and once at another hospital.
    again, _ = create_batch(hospital, [Upload("again-0.jpg", files[0][1]), Upload("again-1.jpg", files[1][1]),
                                       Upload("again-1-copy.jpg", files[1][1])])
    elsewhere = _batch(files[:1])
    result = _run_task(app, [image.id for image in again.images + elsewhere.images])
    assert result["repeats"] == 3 and result["predicted"] == 1 and result["alerts"] == 1
    db.session.expire_all()
    originals = {image.sha256: image for image in first.images}
    for image in db.session.get(Batch, again.id).images:
        prediction = image.predictions[-1]
        original = originals[image.sha256].predictions[-1]
        assert image.status == "done" and prediction.repeat_of_id == original.id and prediction.alert is None
        assert prediction.melanoma_probability == original.melanoma_probability
    # One alert a picture at this hospital; the other hospital's copy is a case of its own.
    assert db.session.scalar(db.select(db.func.count(Alert.id))) == 3
    rows = batch_results(db.session.get(Batch, again.id))
    assert all(row["alert"] and row["repeat_of_image_id"] == originals[row["sha256"]].id for row in rows)
    assert db.session.get(Batch, elsewhere.id).images[0].predictions[-1].repeat_of_id is None


def test_the_same_pictures_classified_by_two_workers_at_once_raise_one_alert_each(app, backend):
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers, and the embedded run has one worker")
    files = _real_images(6)
    hospital, _ = make_hospital()
    batches = [create_batch(hospital, [Upload(f"{copy}-{name}", data) for name, data in files])[0]
               for copy in ("first", "second")]
    champion_threshold_zero(app, [])  # load the model once, outside the race; every picture alerts
    chunks = [[image.id for image in batch.images] for batch in batches]
    results = classify_at_once(app, chunks)
    assert sorted(result["repeats"] for result in results) == [0, 6]
    assert db.session.scalar(db.select(db.func.count(Alert.id))) == 6
    assert db.session.scalar(db.select(db.func.count(Prediction.id)).where(Prediction.repeat_of_id.is_(None))) == 6
