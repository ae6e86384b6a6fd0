"""A hospital's batch through the HTTP API, Redis and a real Celery worker to predictions and alerts."""

import csv
import io
import time

import requests

from models import Alert, Image, ModelVersion, Prediction, db
from tests.conftest import dataset_images, make_hospital, wait_for_batch


def test_batch_of_real_images_is_classified_with_bad_files_rejected(app, live_server, worker):
    _, key = make_hospital()
    good = dataset_images("melanoma", 6) + dataset_images("nevus", 6) + dataset_images("vascular lesion", 3)
    real_jpeg = good[0].read_bytes()
    files = [(f"{path.parent.name}/{path.name}", path.read_bytes()) for path in good]
    files += [
        ("corrupt.jpg", real_jpeg[:600]),  # a JPEG cut short: its header reads, its pixels do not
        ("notes.txt", b"patient notes, not an image"),
    ]

    headers = {"X-API-Key": key}
    response = requests.post(f"{live_server}/api/v1/batches", headers=headers, timeout=60,
                             files=[("files", (name, content)) for name, content in files])
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]
    assert response.json()["url"] == f"{live_server}/api/v1/batches/{batch_id}"

    body = wait_for_batch(live_server, batch_id, headers, worker)
    assert body["counts"]["done"] == len(good)
    assert body["counts"]["rejected"] == 2
    assert body["counts"]["queued"] == 0 and body["counts"]["failed"] == 0

    db.session.expire_all()
    images = db.session.scalars(db.select(Image).where(Image.batch_id == batch_id)).all()
    champion = ModelVersion.champion()
    by_name = {image.filename: image for image in images}
    for name, _ in files[: len(good)]:
        predictions = db.session.scalars(db.select(Prediction).where(Prediction.image_id == by_name[name].id)).all()
        assert len(predictions) == 1
        assert predictions[0].model_version_id == champion.id
        assert abs(sum(predictions[0].probabilities.values()) - 1.0) < 1e-3
        alerted = db.session.scalar(db.select(Alert).where(Alert.prediction_id == predictions[0].id)) is not None
        assert alerted == (predictions[0].melanoma_probability >= champion.alert_threshold)
    for name in ("corrupt.jpg", "notes.txt"):
        assert by_name[name].status == "rejected"
        assert by_name[name].rejection_reason
        assert not by_name[name].predictions

    csv_text = requests.get(f"{live_server}/api/v1/batches/{batch_id}/results?format=csv", headers=headers,
                            timeout=30).text
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert {"filename", "predicted_class", "melanoma_probability", "alert"} <= set(rows[0])
    assert len(rows) == len(files)
    for row in rows:
        image = by_name[row["filename"]]
        if image.status == "rejected":
            assert row["predicted_class"] == "" and row["alert"] == "false" and row["rejection_reason"]
            continue
        prediction = image.predictions[0]
        assert row["predicted_class"] == prediction.predicted_class
        assert abs(float(row["melanoma_probability"]) - prediction.melanoma_probability) < 1e-5
        assert row["alert"] == ("true" if prediction.alert is not None else "false")

    alerts = requests.get(f"{live_server}/api/v1/alerts", headers=headers, timeout=30).json()["alerts"]
    assert len(alerts) == body["counts"]["alerts"]
    assert all(alert["melanoma_probability"] >= champion.alert_threshold for alert in alerts)

    # Each alert gets a heatmap of where the model looked, drawn by the worker after the results.
    assert alerts, "six real melanomas raised no alert at a threshold chosen for 90 % sensitivity"
    if alerts:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            alerts = requests.get(f"{live_server}/api/v1/alerts", headers=headers, timeout=30).json()["alerts"]
            if all(alert["heatmap_url"] for alert in alerts):
                break
            time.sleep(0.5)
        assert all(alert["heatmap_url"] for alert in alerts), worker.output()[-3000:]
        heatmap = requests.get(f"{live_server}/api/v1/alerts/{alerts[0]['id']}/heatmap", headers=headers, timeout=30)
        assert heatmap.headers["Content-Type"] == "image/png" and heatmap.content.startswith(b"\x89PNG")
