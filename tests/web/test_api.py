"""The hospitals' API: authentication, scoping, bad input, idempotency, content-addressed storage."""

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

from models import Alert, Batch, Image, ModelVersion, Prediction, db
from models.hospital import ApiKey
from tests.conftest import IDLE_REDIS_DB, REDIS_BASE_URL, ROOT, make_hospital, make_png


def upload(client, key, files, headers=None, references=None):
    data = {"files": [(io.BytesIO(content), name) for name, content in files]}
    if references is not None:
        data["references"] = references
    return client.post("/api/v1/batches", data=data, content_type="multipart/form-data",
                       headers={"X-API-Key": key, **(headers or {})})


def test_requests_without_a_valid_key_are_refused(client, hospital):
    assert client.get("/api/v1/alerts").status_code == 401
    assert client.get("/api/v1/alerts", headers={"X-API-Key": "mk_wrong"}).status_code == 401
    response = client.get("/api/v1/alerts", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and "unknown" in response.get_json()["error"]


def test_key_works_as_header_or_bearer_and_only_its_hash_is_stored(client, hospital):
    _, key = hospital
    assert client.get("/api/v1/alerts", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/api/v1/alerts", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    stored = db.session.scalars(db.select(ApiKey)).all()
    assert all(row.key_hash != key and key not in row.key_hash for row in stored)


def test_upload_is_accepted_with_batch_id_and_url(client, hospital):
    _, key = hospital
    response = upload(client, key, [("a.png", make_png()), ("b.png", make_png(colour=(1, 2, 3)))])
    assert response.status_code == 202
    body = response.get_json()
    assert body["image_count"] == 2 and body["counts"]["queued"] == 2
    assert response.headers["Location"] == body["url"]
    assert client.get(body["url"], headers={"X-API-Key": key}).get_json()["id"] == body["id"]


def test_upload_without_files_is_a_400_not_a_500(client, hospital):
    _, key = hospital
    response = client.post("/api/v1/batches", headers={"X-API-Key": key}, data=b"{}",
                           content_type="application/json")
    assert response.status_code == 400 and "multipart" in response.get_json()["error"]
    response = client.post("/api/v1/batches", headers={"X-API-Key": key}, data=b"garbage",
                           content_type="multipart/form-data; boundary=xyz")
    assert response.status_code == 400


def test_unreadable_files_are_rejected_with_reasons_and_the_rest_goes_on(client, hospital, app):
    _, key = hospital
    response = upload(client, key, [("ok.png", make_png()), ("empty.jpg", b""), ("text.jpg", b"hello"),
                                    ("pic.gif", _gif())])
    body = response.get_json()
    assert body["counts"] == {"queued": 1, "done": 0, "rejected": 3, "failed": 0, "alerts": 0,
                              "quality_warnings": 0}
    results = client.get(f"/api/v1/batches/{body['id']}/results", headers={"X-API-Key": key}).get_json()
    reasons = {row["filename"]: row["rejection_reason"] for row in results["results"]}
    assert reasons["ok.png"] is None
    assert reasons["empty.jpg"] == "empty file"
    assert "not an image we can read" in reasons["text.jpg"]
    assert "unsupported image format GIF" in reasons["pic.gif"]


def test_patient_and_lesion_references_are_stored_and_returned_and_a_wrong_csv_stores_nothing(client, hospital):
    _, key = hospital
    files = [("a.png", make_png()), ("sub/b.png", make_png(colour=(1, 2, 3))), ("c.png", make_png(colour=(4, 5, 6)))]
    for references, complaint in (
            ("file,name\na.png,Jane\n", "first line must name the columns"),
            ("patient,lesion\nP1,L1\n", "first line must name the columns"),
            ("file,patient\nd.png,P1\n", "line 2: 'd.png' is not a file of this batch"),
            ("file,patient\na.png,P1\na.png,P2\n", "line 3: 'a.png' is named twice"),
            ("file,patient,lesion\na.png,P1\n", "line 2: 2 values for 3 columns"),
            ("file,patient\na.png," + "x" * 101 + "\n", "at most 100 characters")):
        response = upload(client, key, files, references=references)
        assert response.status_code == 400 and complaint in response.get_json()["error"], response.get_json()
        assert "nothing was stored" in response.get_json()["error"]
    assert db.session.scalar(db.select(db.func.count(Image.id))) == 0
    references = "\ufeffFile, Patient ,lesion\na.png,P-00417,left shoulder\n\nsub/b.png,P-00417,\n"
    body = upload(client, key, files, references=references).get_json()
    json_rows = client.get(body["results_url"], headers={"X-API-Key": key}).get_json()["results"]
    assert [(row["filename"], row["patient_ref"], row["lesion_ref"]) for row in json_rows] == [
        ("a.png", "P-00417", "left shoulder"), ("sub/b.png", "P-00417", None), ("c.png", None, None)]
    csv_rows = list(csv.DictReader(io.StringIO(
        client.get(body["results_url"] + "?format=csv", headers={"X-API-Key": key}).text)))
    assert [(row["patient_ref"], row["lesion_ref"]) for row in csv_rows] == [
        ("P-00417", "left shoulder"), ("P-00417", ""), ("", "")]


def test_batch_with_only_bad_files_is_done_at_once(client, hospital):
    _, key = hospital
    body = upload(client, key, [("x.jpg", b"nope")]).get_json()
    assert body["status"] == "done" and body["finished_at"]


def test_identical_files_are_stored_once(client, hospital, app):
    _, key = hospital
    content = make_png(colour=(9, 9, 9))
    upload(client, key, [("one.png", content), ("two.png", content)])
    upload(client, key, [("three.png", content)])
    paths = {image.storage_path for image in db.session.scalars(db.select(Image))}
    assert len(paths) == 1
    folder = (Path(app.config["STORAGE_DIR"]) / paths.pop()).parent
    assert [path.read_bytes() for path in folder.iterdir()] == [content]


def test_resubmission_with_the_same_idempotency_key_returns_the_first_batch(client, hospital):
    _, key = hospital
    first = upload(client, key, [("a.png", make_png())], headers={"Idempotency-Key": "upload-42"})
    again = upload(client, key, [("a.png", make_png())], headers={"Idempotency-Key": "upload-42"})
    assert first.status_code == 202 and again.status_code == 200
    assert first.get_json()["id"] == again.get_json()["id"]
    assert db.session.scalar(db.select(db.func.count(Batch.id))) == 1
    assert db.session.scalar(db.select(db.func.count(Image.id))) == 1


def test_a_reused_idempotency_key_with_other_files_is_refused_and_changes_nothing(client, hospital):
    _, key = hospital
    headers = {"Idempotency-Key": "upload-43"}
    first = upload(client, key, [("a.png", make_png()), ("b.png", make_png(colour=(9, 9, 9)))], headers=headers)
    for other in ([("a.png", make_png())],  # one file fewer
                  [("a.png", make_png()), ("b.png", make_png(colour=(8, 8, 8)))],  # other contents
                  [("b.png", make_png(colour=(9, 9, 9))), ("a.png", make_png())]):  # other order
        refused = upload(client, key, other, headers=headers)
        assert refused.status_code == 422, refused.get_json()
        assert f"batch {first.get_json()['id']}" in refused.get_json()["error"]
    assert db.session.scalar(db.select(db.func.count(Batch.id))) == 1
    assert db.session.scalar(db.select(db.func.count(Image.id))) == 2


def test_another_hospitals_batch_and_alerts_answer_404_or_nothing(client, hospital, app):
    _, key = hospital
    _, other_key = make_hospital("Other General")
    batch_id = upload(client, key, [("a.png", make_png())]).get_json()["id"]
    _predict_with_alert(batch_id)
    for path in (f"/api/v1/batches/{batch_id}", f"/api/v1/batches/{batch_id}/results"):
        response = client.get(path, headers={"X-API-Key": other_key})
        assert response.status_code == 404 and "no batch" in response.get_json()["error"]
    assert client.get("/api/v1/alerts", headers={"X-API-Key": other_key}).get_json()["alerts"] == []
    assert len(client.get("/api/v1/alerts", headers={"X-API-Key": key}).get_json()["alerts"]) == 1
    assert client.get("/api/v1/batches/999999", headers={"X-API-Key": key}).status_code == 404


def test_results_csv_has_one_row_per_image_with_alert_as_true_or_false(client, hospital):
    _, key = hospital
    batch_id = upload(client, key, [("a.png", make_png()), ("bad.jpg", b"x")]).get_json()["id"]
    _predict_with_alert(batch_id)
    response = client.get(f"/api/v1/batches/{batch_id}/results?format=csv", headers={"X-API-Key": key})
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["filename"] for row in rows] == ["a.png", "bad.jpg"]
    assert rows[0]["alert"] == "true" and rows[0]["predicted_class"] == "melanoma"
    assert float(rows[0]["melanoma_probability"]) == 0.97
    assert rows[1]["alert"] == "false" and rows[1]["status"] == "rejected"
    bad_format = client.get(f"/api/v1/batches/{batch_id}/results?format=xml", headers={"X-API-Key": key})
    assert bad_format.status_code == 400


def test_results_csv_keeps_spreadsheets_from_running_a_filename_as_a_formula(client, hospital):
    _, key = hospital
    names = ["=cmd|' /C calc'!A0.png", "+1.png", "-2.png", "@sum.png", "plain=1.png"]
    batch_id = upload(client, key, [(name, make_png(colour=(i, 0, 0))) for i, name in enumerate(names)]
                      ).get_json()["id"]
    response = client.get(f"/api/v1/batches/{batch_id}/results?format=csv", headers={"X-API-Key": key})
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["filename"] for row in rows] == ["'" + name for name in names[:4]] + ["plain=1.png"]
    as_json = client.get(f"/api/v1/batches/{batch_id}/results", headers={"X-API-Key": key}).get_json()
    assert [row["filename"] for row in as_json["results"]] == names


def test_web_process_never_imports_tensorflow_even_while_taking_a_batch(tmp_path):
    code = """
import io, sys, time
start = time.perf_counter()
from flask_migrate import upgrade
from models import Hospital, db
from web import create_app
app = create_app()
with app.app_context():
    upgrade()
    hospital = Hospital(name="h")
    db.session.add(hospital)
    key = hospital.issue_api_key()
    db.session.commit()
    response = app.test_client().post("/api/v1/batches", headers={"X-API-Key": key},
                                      data={"files": [(io.BytesIO(PNG), "a.png")]})
    assert response.status_code == 202, response.get_json()
heavy = [m for m in ("tensorflow", "keras", "worker.classifier", "worker") if m in sys.modules]
print(f"started and took a batch in {time.perf_counter() - start:.1f} s; heavy modules: {heavy}")
sys.exit(1 if heavy else 0)
"""
    env = {**os.environ, "MELANOMA_INSTANCE": str(tmp_path), "REDIS_URL": f"{REDIS_BASE_URL}/{IDLE_REDIS_DB}"}
    env.pop("DATABASE_URL", None)
    result = subprocess.run([sys.executable, "-c", f"PNG = {make_png()!r}\n" + code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _predict_with_alert(batch_id: int, quality_warning: str | None = None) -> None:
    """Write a prediction and alert as the worker would, for API behaviour that needs one."""
    version = ModelVersion(name="test", version="1", artifact_path="x", artifact_sha256="0" * 64,
                           class_names=["melanoma"], input_size=32, alert_threshold=0.5)
    db.session.add(version)
    image = db.session.scalars(db.select(Image).where(Image.batch_id == batch_id, Image.status == "queued")).first()
    prediction = Prediction(image_id=image.id, model_version=version, probabilities={"melanoma": 0.97},
                            predicted_class="melanoma", melanoma_probability=0.97, quality_warning=quality_warning)
    db.session.add(Alert(prediction=prediction, hospital_id=image.hospital_id, melanoma_probability=0.97,
                         threshold=0.5))
    image.status = "done"
    db.session.commit()


def _gif() -> bytes:
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.new("RGB", (8, 8)).save(out, format="GIF")
    return out.getvalue()


def test_a_batch_of_thousands_of_files_is_accepted_in_one_request(client, hospital):
    _, key = hospital
    files = [(f"lesion-{index:04d}.png", make_png(8, 8, (index % 256, 40, 90))) for index in range(1500)]
    response = upload(client, key, files)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["image_count"] == 1500
    assert db.session.scalar(db.select(db.func.count(Image.id))) == 1500


def test_unknown_urls_and_methods_under_the_api_answer_json(client, hospital):
    _, key = hospital
    missing = client.get("/api/v1/batches/not-a-number", headers={"X-API-Key": key})
    assert missing.status_code == 404 and missing.is_json
    wrong_method = client.delete("/api/v1/alerts", headers={"X-API-Key": key})
    assert wrong_method.status_code == 405 and wrong_method.is_json


def test_an_upload_over_the_size_limit_is_a_413_with_a_message(app, client, hospital):
    _, key = hospital
    app.config["MAX_CONTENT_LENGTH"] = 10_000
    response = upload(client, key, [("big.png", make_png(200, 200) + b"x" * 20_000)])
    assert response.status_code == 413 and "error" in response.get_json()


def test_a_file_over_the_per_file_limit_is_rejected_unread_and_the_rest_of_the_batch_goes_on(app, client, hospital):
    import hashlib

    from web.ingest import Upload

    _, key = hospital
    app.config["MAX_FILE_MB"] = 1
    big = make_png() + b"x" * (1024 * 1024)
    response = upload(client, key, [("big.png", big), ("small.png", make_png())])
    assert response.status_code == 202
    images = sorted(db.session.get(Batch, response.get_json()["id"]).images, key=lambda image: image.filename)
    assert [(image.filename, image.status) for image in images] == [("big.png", "rejected"), ("small.png", "queued")]
    assert images[0].rejection_reason == "file is 1 MB, over the 1 MB limit"
    assert images[0].size_bytes == len(big) and images[0].sha256 == hashlib.sha256(big).hexdigest()
    unread = Upload.from_stream("big.png", io.BytesIO(big), 1024 * 1024)
    assert unread.data == b"" and unread.byte_count == len(big) and unread.digest == hashlib.sha256(big).hexdigest()


def test_odd_ids_limits_and_filenames_answer_4xx_or_work_never_500(client, hospital):
    _, key = hospital
    headers = {"X-API-Key": key}
    for path in ("/api/v1/batches/99999999999999999999", "/api/v1/batches/99999999999999999999/results",
                 "/api/v1/alerts/99999999999999999999/heatmap"):
        assert client.get(path, headers=headers).status_code == 404
    for query in ("limit=-1", "limit=0", "limit=abc", "limit=501", "before=0", "before=99999999999999999999"):
        answer = client.get(f"/api/v1/batches?{query}", headers=headers)
        assert answer.status_code == 400 and query.split("=")[0] in answer.get_json()["error"], query
    for query in ("limit=5001", "offset=-1", "limit=1.5"):
        assert client.get(f"/api/v1/alerts?{query}", headers=headers).status_code == 400, query
    response = upload(client, key, [("bad\x00name\t.png", make_png())])
    body = response.get_json()
    assert response.status_code == 202, body
    results = client.get(f"/api/v1/batches/{body['id']}/results", headers=headers).get_json()["results"]
    assert results[0]["filename"] == "badname.png"


def test_a_file_name_that_is_not_utf8_gets_an_error_that_says_so(client, hospital):
    _, key = hospital
    boundary = "b0undary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
             "Content-Type: image/png\r\n\r\n".encode("latin-1") + make_png() + b"\r\n"
             for name in ("a.png", "caf\u00e9.png", "b.png")]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    response = client.post("/api/v1/batches", data=body, headers={"X-API-Key": key},
                           content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 400 and "UTF-8" in response.get_json()["error"]
    assert db.session.scalar(db.select(db.func.count(Batch.id))) == 0


def test_batches_and_alerts_page_through_everything_with_next(client, hospital):
    _, key = hospital
    headers = {"X-API-Key": key}
    ids = [upload(client, key, [(f"{i}.png", make_png(colour=(i, 1, 1)))]).get_json()["id"] for i in range(5)]
    seen, url = [], "/api/v1/batches?limit=2"
    while url:
        page = client.get(url, headers=headers).get_json()
        assert len(page["batches"]) <= 2
        seen += [batch["id"] for batch in page["batches"]]
        url = page["next"]
    assert seen == sorted(ids, reverse=True)
    version = ModelVersion(name="test", version="1", artifact_path="x", artifact_sha256="0" * 64,
                           class_names=["melanoma"], input_size=32, alert_threshold=0.5)
    for batch_id, probability in zip(ids, (0.6, 0.9, 0.7, 0.8, 0.95), strict=True):
        image = db.session.get(Batch, batch_id).images[0]
        prediction = Prediction(image_id=image.id, model_version=version, probabilities={"melanoma": probability},
                                predicted_class="melanoma", melanoma_probability=probability)
        db.session.add(Alert(prediction=prediction, hospital_id=image.hospital_id,
                             melanoma_probability=probability, threshold=0.5))
    db.session.commit()
    seen, url = [], "/api/v1/alerts?limit=2"
    while url:
        page = client.get(url, headers=headers).get_json()
        assert page["total"] == 5 and len(page["alerts"]) <= 2
        seen += [alert["melanoma_probability"] for alert in page["alerts"]]
        url = page["next"]
    assert seen == [0.95, 0.9, 0.8, 0.7, 0.6]


def test_the_heatmap_of_another_hospitals_alert_answers_404(client, hospital):
    _, key = hospital
    _, other_key = make_hospital("Other General")
    batch_id = upload(client, key, [("a.png", make_png())]).get_json()["id"]
    _predict_with_alert(batch_id)
    alert_id = db.session.scalar(db.select(Alert.id))
    assert client.get(f"/api/v1/alerts/{alert_id}/heatmap", headers={"X-API-Key": other_key}).status_code == 404
    waiting = client.get(f"/api/v1/alerts/{alert_id}/heatmap", headers={"X-API-Key": key})
    assert waiting.status_code == 404 and "not drawn yet" in waiting.get_json()["error"]
    # A heatmap whose file went missing is forgotten, so the sweep for alerts without one draws it again.
    db.session.execute(db.update(Alert).values(heatmap_path="00/00/gone", heatmap_attempts=1))
    db.session.commit()
    lost = client.get(f"/api/v1/alerts/{alert_id}/heatmap", headers={"X-API-Key": key})
    assert lost.status_code == 404 and "will be drawn again" in lost.get_json()["error"]
    db.session.expire_all()
    assert db.session.get(Alert, alert_id).heatmap_path is None
    assert db.session.get(Alert, alert_id).heatmap_attempts == 0


def test_simultaneous_uploads_with_one_idempotency_key_make_one_batch(live_server, hospital):
    import threading

    import requests

    _, key = hospital
    start, answers = threading.Barrier(4), []

    def send():
        start.wait()
        response = requests.post(f"{live_server}/api/v1/batches", timeout=60,
                                 headers={"X-API-Key": key, "Idempotency-Key": "same-upload"},
                                 files=[("files", ("a.png", make_png()))])
        answers.append((response.status_code, response.json().get("id")))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(status for status, _ in answers) == [200, 200, 200, 202]
    assert len({batch_id for _, batch_id in answers}) == 1
    db.session.expire_all()
    assert db.session.scalar(db.select(db.func.count(Batch.id))) == 1
