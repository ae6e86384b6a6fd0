"""A hospital's reliability: the serving model's sensitivity and specificity at its threshold on the hospital's
held-back confirmed images, with Wilson intervals and counts, and a plain warning where melanomas are missed
beyond the target; in the API, the batch answers and the CLI."""

from models import ModelVersion, Prediction, ShiftMeasurement, db
from models.diagnosis import held_back
from tests.conftest import make_hospital, make_png
from web import diagnoses
from web.cli import cli
from web.config import DEFAULT_MODEL_DIR
from web.ingest import Upload, create_batch
from web.reliability import SHIFT_LIMIT, SHIFT_MIN_IMAGES, WARNING, wilson_interval
from worker.registry import ensure_champion


def test_the_wilson_interval_matches_its_textbook_values():
    assert wilson_interval(0, 0) is None
    assert wilson_interval(9, 12) == [0.4677, 0.9111]  # 0.75 of 12
    assert wilson_interval(10, 10) == [0.7225, 1.0]


def _confirmed(hospital, melanomas_found: int, melanomas_missed: int, others_cleared: int, others_alerted: int,
               champion, size: int = 20):
    """Pictures with confirmed diagnoses and the champion's scores on either side of its threshold."""
    plan = ([("melanoma", True)] * melanomas_found + [("melanoma", False)] * melanomas_missed
            + [("nevus", False)] * others_cleared + [("other", True)] * others_alerted)
    batch, _ = create_batch(hospital, [Upload(f"{index}.png", make_png(size + index, 20))
                                       for index in range(len(plan))])
    for image, (diagnosis, above) in zip(batch.images, plan, strict=True):
        score = min(1.0, champion.alert_threshold + 0.01) if above else champion.alert_threshold / 2
        db.session.add(Prediction(image_id=image.id, model_version_id=champion.id, probabilities={},
                                  predicted_class=diagnosis, melanoma_probability=score))
    db.session.commit()
    rows = [{"image_id": image.id, "diagnosis": diagnosis, "method": "histopathology"}
            for image, (diagnosis, _) in zip(batch.images, plan, strict=True)]
    assert len(diagnoses.record(hospital, rows, actor="test").stored) == len(plan)
    return batch


def test_a_hospital_whose_melanomas_are_missed_is_told_so_with_its_figures(app, client):
    app.config["HOLDBACK_PERCENT"] = 100  # every confirmed picture is held back
    champion = ensure_champion(DEFAULT_MODEL_DIR)
    hospital, key = make_hospital()
    batch = _confirmed(hospital, melanomas_found=9, melanomas_missed=3, others_cleared=7, others_alerted=1,
                       champion=champion)
    # Another hospital's pictures never count for this one.
    _confirmed(make_hospital()[0], 1, 0, 0, 0, champion, size=60)
    body = client.get("/api/v1/reliability", headers={"X-API-Key": key}).get_json()
    assert body["model"] == champion.label and body["alert_threshold"] == champion.alert_threshold
    assert (body["held_back_images"], body["scored_by_this_model"], body["melanomas"], body["other_lesions"]) == (
        20, 20, 12, 8)
    assert body["sensitivity"] == 0.75 and body["sensitivity_interval_95"] == [0.4677, 0.9111]
    assert body["specificity"] == 7 / 8 and body["specificity_interval_95"] == wilson_interval(7, 8)
    assert body["enough_melanomas_to_tell"] and body["warning"] == WARNING
    answered = client.get(f"/api/v1/batches/{batch.id}", headers={"X-API-Key": key}).get_json()
    assert answered["reliability_warning"] == WARNING
    results = client.get(f"/api/v1/batches/{batch.id}/results", headers={"X-API-Key": key}).get_json()
    assert results["batch"]["reliability_warning"] == WARNING
    printed = app.test_cli_runner().invoke(cli, ["hospitals", "reliability", hospital.name])
    assert printed.exit_code == 0, printed.output
    assert "sensitivity 0.750 (95 % 0.468-0.911, 12 melanomas)" in printed.output and WARNING in printed.output


def test_too_few_melanomas_or_a_new_champion_measure_nothing_yet(app, client):
    app.config["HOLDBACK_PERCENT"] = 100
    champion = ensure_champion(DEFAULT_MODEL_DIR)
    hospital, key = make_hospital()
    _confirmed(hospital, melanomas_found=0, melanomas_missed=5, others_cleared=2, others_alerted=0,
               champion=champion)
    body = client.get("/api/v1/reliability", headers={"X-API-Key": key}).get_json()
    assert body["sensitivity"] == 0.0 and not body["enough_melanomas_to_tell"] and body["warning"] is None
    # A champion that has scored none of them yet (the gate sends them to the workers when it promotes).
    newer = ModelVersion(name="melanoma-cnn", version="newer", artifact_path="newer.keras", artifact_sha256="0" * 64,
                         class_names=[], input_size=32, alert_threshold=0.5)
    db.session.add(newer)
    newer.promote()
    db.session.commit()
    body = client.get("/api/v1/reliability", headers={"X-API-Key": key}).get_json()
    assert body["model"] == ModelVersion.champion().label and body["held_back_images"] == 7
    assert body["scored_by_this_model"] == 0 and body["sensitivity"] is None and body["warning"] is None


def test_nothing_is_held_back_at_zero_percent(app, client):
    app.config["HOLDBACK_PERCENT"] = 0
    champion = ensure_champion(DEFAULT_MODEL_DIR)
    hospital, key = make_hospital()
    batch = _confirmed(hospital, 12, 0, 2, 0, champion)
    assert not any(held_back(image.sha256, 0) for image in batch.images)
    body = client.get("/api/v1/reliability", headers={"X-API-Key": key}).get_json()
    assert body["held_back_images"] == 0 and body["sensitivity"] is None


def test_a_far_shift_by_the_serving_model_brings_the_warning_and_one_by_an_earlier_model_does_not(app, client):
    champion = ensure_champion(DEFAULT_MODEL_DIR)
    hospital, key = make_hospital()
    batch, _ = create_batch(hospital, [Upload("a.png", make_png())])
    assert client.get("/api/v1/reliability", headers={"X-API-Key": key}).get_json()["shift"] is None
    earlier = ModelVersion(name="m", version="old", artifact_path="a", artifact_sha256="0" * 64, class_names=[],
                           input_size=1, alert_threshold=0.5, metrics={}, card={})
    db.session.add(earlier)
    db.session.flush()
    db.session.add(ShiftMeasurement(hospital_id=hospital.id, model_version_id=earlier.id, images=200,
                                    last_image_id=batch.images[0].id, auc=0.95))
    db.session.commit()
    body = client.get("/api/v1/reliability", headers={"X-API-Key": key}).get_json()
    assert body["shift"] is None and body["warning"] is None
    for auc, flagged in ((SHIFT_LIMIT - 0.01, False), (SHIFT_LIMIT, True)):
        db.session.add(ShiftMeasurement(hospital_id=hospital.id, model_version_id=champion.id, images=SHIFT_MIN_IMAGES,
                                        last_image_id=batch.images[0].id, auc=auc))
        db.session.commit()
        body = client.get("/api/v1/reliability", headers={"X-API-Key": key}).get_json()
        assert (body["shift"]["auc"], body["shift"]["images"], body["shift"]["flagged"]) == (
            auc, SHIFT_MIN_IMAGES, flagged)
        assert body["warning"] == (WARNING if flagged else None)
        answered = client.get(f"/api/v1/batches/{batch.id}", headers={"X-API-Key": key}).get_json()
        assert answered["reliability_warning"] == body["warning"]
        csv = client.get(f"/api/v1/batches/{batch.id}/results?format=csv", headers={"X-API-Key": key})
        assert csv.status_code == 200 and csv.headers.get("X-Reliability-Warning") == body["warning"]
