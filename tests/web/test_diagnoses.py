"""Confirmed diagnoses posted by a hospital's system (JSON rows or CSV), row by row: bad rows are refused
with their reasons and never drop the good ones; every confirmation keeps who, when, how and the value it
replaced; the newest counts, and the batch results carry it."""

import csv
import io

import pytest

from models import AuditEvent, ConfirmedDiagnosis, db
from models.diagnosis import DIAGNOSES
from tests.conftest import make_hospital, make_png
from tests.web.test_api import upload


@pytest.fixture
def batch(client, hospital):
    """Four images of the hospital (two with the same name), and one that could not be read."""
    _, key = hospital
    files = [("a.png", make_png(20, 20)), ("b.png", make_png(21, 20)), ("same.png", make_png(22, 20)),
             ("same.png", make_png(23, 20)), ("notes.png", b"not a picture")]
    body = upload(client, key, files).get_json()
    results = client.get(f"/api/v1/batches/{body['id']}/results", headers={"X-API-Key": key}).get_json()["results"]
    return body["id"], results, key


def _post(client, key, rows, **kwargs):
    return client.post("/api/v1/diagnoses", headers={"X-API-Key": key}, json={"diagnoses": rows}, **kwargs)


def test_the_diagnoses_are_the_classifiers_nine_and_other():
    from worker.classifier.choices import CLASS_NAMES

    assert DIAGNOSES == (*CLASS_NAMES, "other")


def test_good_rows_are_stored_and_each_bad_row_is_refused_with_its_reason(client, batch):
    batch_id, results, key = batch
    a, b, same, _, unreadable = results
    _, other_key = make_hospital()
    theirs = upload(client, other_key, [("theirs.png", make_png(30, 30))]).get_json()["id"]
    their_image = client.get(f"/api/v1/batches/{theirs}/results",
                             headers={"X-API-Key": other_key}).get_json()["results"][0]["image_id"]
    rows = [
        {"image_id": a["image_id"], "diagnosis": "melanoma", "method": "histopathology", "confirmed_by": "Dr Path"},
        {"sha256": b["sha256"], "diagnosis": "Nevus", "method": "follow-up"},
        {"batch_id": batch_id, "filename": "a.png", "diagnosis": "dermatofibroma", "method": "consensus"},
        {"image_id": a["image_id"], "diagnosis": "freckle", "method": "histopathology"},
        {"image_id": a["image_id"], "diagnosis": "melanoma", "method": "guess"},
        {"image_id": their_image, "diagnosis": "melanoma", "method": "histopathology"},
        {"batch_id": batch_id, "filename": same["filename"], "diagnosis": "nevus", "method": "clinical"},
        {"image_id": unreadable["image_id"], "diagnosis": "nevus", "method": "clinical"},
        {"diagnosis": "nevus", "method": "clinical"},
        ["not", "an", "object"],
        {"image_id": "12x", "diagnosis": "nevus", "method": "clinical"},
    ]
    answer = _post(client, key, rows)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["stored"] == 3 and body["unchanged"] == 0
    reasons = {refused["row"]: refused["reason"] for refused in body["refused"]}
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9, 10, 11]
    assert "unknown diagnosis 'freckle'" in reasons[4] and "unknown method 'guess'" in reasons[5]
    assert reasons[6] == f"no image {their_image} for this hospital"  # as if it did not exist
    assert "2 images named 'same.png'" in reasons[7] and "could not be read" in reasons[8]
    assert "name the image" in reasons[9] and "object" in reasons[10] and "whole number" in reasons[11]
    # Row 3 confirmed image a again: it replaced row 1's melanoma, and is the one that counts.
    stored = {row["row"]: row for row in body["diagnoses"]}
    assert stored[3]["image_id"] == a["image_id"] and stored[3]["replaced"] == "melanoma"
    assert stored[2]["diagnosis"] == "nevus"
    assert ConfirmedDiagnosis.newest([a["image_id"]])[a["image_id"]].diagnosis == "dermatofibroma"
    assert db.session.scalar(db.select(AuditEvent).where(AuditEvent.action == "diagnoses.recorded")).details == {
        "stored": 3, "refused": 8}
    # The other hospital's image is untouched.
    assert not ConfirmedDiagnosis.newest([their_image])


def test_history_is_listed_newest_first_and_the_same_row_again_changes_nothing(client, batch):
    _, results, key = batch
    image_id = results[0]["image_id"]
    first = {"image_id": image_id, "diagnosis": "nevus", "method": "clinical"}
    second = {"image_id": image_id, "diagnosis": "melanoma", "method": "histopathology", "confirmed_by": "lab 4"}
    assert _post(client, key, [first]).get_json()["stored"] == 1
    assert _post(client, key, [second]).get_json()["stored"] == 1
    again = _post(client, key, [second]).get_json()
    assert again["stored"] == 0 and again["unchanged"] == 1
    listed = client.get(f"/api/v1/diagnoses?image_id={image_id}", headers={"X-API-Key": key}).get_json()
    history = listed["diagnoses"]
    assert [(row["diagnosis"], row["replaced"], row["current"]) for row in history] == [
        ("melanoma", "nevus", True), ("nevus", None, False)]
    assert history[0]["confirmed_by"] == "lab 4" and history[0]["recorded_by"].startswith("hospital:")
    assert history[0]["filename"] == results[0]["filename"] and listed["next"] is None
    paged = client.get("/api/v1/diagnoses?limit=1", headers={"X-API-Key": key}).get_json()
    assert len(paged["diagnoses"]) == 1 and paged["next"]
    # Another hospital sees none of it.
    _, other_key = make_hospital()
    assert client.get("/api/v1/diagnoses", headers={"X-API-Key": other_key}).get_json()["diagnoses"] == []


def test_a_csv_upload_or_body_is_read_row_by_row(client, batch):
    batch_id, results, key = batch
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["image_id", "sha256", "batch_id", "filename", "diagnosis", "method"])
    writer.writeheader()
    writer.writerow({"image_id": results[0]["image_id"], "diagnosis": "melanoma", "method": "histopathology"})
    writer.writerow({"sha256": results[1]["sha256"], "diagnosis": "nevus", "method": "follow-up"})
    writer.writerow({"batch_id": batch_id, "filename": "a.png", "diagnosis": "wart", "method": "clinical"})
    text = "\ufeff" + out.getvalue()  # as spreadsheets save it
    as_file = client.post("/api/v1/diagnoses", headers={"X-API-Key": key}, content_type="multipart/form-data",
                          data={"file": (io.BytesIO(text.encode()), "diagnoses.csv")}).get_json()
    assert as_file["stored"] == 2 and [row["row"] for row in as_file["refused"]] == [3]
    as_body = client.post("/api/v1/diagnoses", headers={"X-API-Key": key}, data=text.encode(),
                          content_type="text/csv").get_json()
    assert as_body["stored"] == 0 and as_body["unchanged"] == 2
    no_header = client.post("/api/v1/diagnoses", headers={"X-API-Key": key}, data=b"1,melanoma,clinical\n",
                            content_type="text/csv")
    assert no_header.status_code == 400 and "header row" in no_header.get_json()["error"]


def test_the_results_carry_each_images_id_and_confirmed_diagnosis(client, batch):
    batch_id, results, key = batch
    _post(client, key, [{"image_id": results[1]["image_id"], "diagnosis": "melanoma", "method": "histopathology"}])
    rows = client.get(f"/api/v1/batches/{batch_id}/results", headers={"X-API-Key": key}).get_json()["results"]
    assert [row["confirmed_diagnosis"] for row in rows] == [None, "melanoma", None, None, None]
    assert rows[1]["confirmed_method"] == "histopathology" and rows[1]["image_id"] == results[1]["image_id"]
    text = client.get(f"/api/v1/batches/{batch_id}/results?format=csv", headers={"X-API-Key": key}).get_data(
        as_text=True)
    row = list(csv.DictReader(io.StringIO(text)))[1]
    assert row["image_id"] == str(results[1]["image_id"]) and row["confirmed_diagnosis"] == "melanoma"


def test_a_request_that_stores_nothing_says_so(client, batch):
    _, results, key = batch
    refused = _post(client, key, [{"image_id": results[0]["image_id"], "diagnosis": "?", "method": "clinical"}])
    assert refused.status_code == 422 and refused.get_json()["refused"][0]["row"] == 1
    for body in ({"rows": []}, [1, 2], "text"):
        answer = client.post("/api/v1/diagnoses", headers={"X-API-Key": key}, json=body)
        assert answer.status_code == 400 and "diagnoses" in answer.get_json()["error"]
    too_many = _post(client, key, [{}] * 10_001)
    assert too_many.status_code == 413
    assert db.session.scalar(db.select(db.func.count(ConfirmedDiagnosis.id))) == 0
