"""Scheduled retraining: trains with the champion's recipe, registers the result, and the gate decides."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from models import AuditEvent, ModelVersion, db
from tests.conftest import make_hospital
from web.cli import cli
from web.queue import RETRAIN
from worker.gate import PROMOTED, REJECTED, UNDECIDED
from worker.registry import register_model, resolve_path


def test_retrain_registers_a_new_model_and_the_comparison_decides_whether_it_serves(app, client, tiny_dataset,
                                                                                   tiny_model, tmp_path):
    import worker.tasks  # noqa: F401  (registers the tasks on this app)
    from worker.classifier.comparison import compare, comparison_path

    model_dir, card = tiny_model
    champion = register_model(model_dir, promote=True)
    app.config["RETRAIN_DATA_DIRS"] = [str(tiny_dataset)]
    # What a run killed midway leaves, long ago; and one that is still going on now.
    models_dir = Path(app.config["INSTANCE_DIR"]) / "models"
    abandoned, running = models_dir / "20260101-000000.partial", models_dir / "20990101-000000.partial"
    for folder in (abandoned, running):
        folder.mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"half a model")
    os.utime(abandoned, (time.time() - 5 * 3600,) * 2)
    new_id = app.extensions["celery"].tasks[RETRAIN].apply().get()
    db.session.expire_all()
    new = db.session.get(ModelVersion, new_id)
    assert new.id != champion.id
    new_dir = resolve_path(new.artifact_path).parent
    assert new_dir.parent == models_dir and not new_dir.name.endswith(".partial")
    assert not abandoned.exists() and running.exists()
    shutil.rmtree(running)
    assert new.card["training"]["backbone"] == card["training"]["backbone"] == "small"
    assert new.input_size == card["input_size"] and new.card["training"]["epochs"] == card["training"]["epochs"]
    # The champion's own recipe, not the small backbone's defaults.
    assert new.card["training"]["colour"] == "field-standardise" and new.card["training"]["style_mix"] is True
    assert new.card["training"]["augmentation"] == "rim" and new.card["training"]["loss"] == "logit-adjusted"
    assert new.card["training"]["field"] == 0.8
    assert db.session.scalar(db.select(AuditEvent).where(AuditEvent.actor == "schedule:retrain"))
    # Same seed, same data: the test split they share decides, as `melanoma compare` would.
    event = db.session.scalar(db.select(AuditEvent).where(AuditEvent.target == f"model:{new_id}",
                                                          AuditEvent.action == "model.compared"))
    written = json.loads(comparison_path(model_dir, new_dir).read_text())
    expected = compare(model_dir, new_dir, tiny_dataset, out_path=tmp_path / "again.json")
    assert written == expected and written["images"] == 9 and written["melanomas"] == 1
    # No hospital has confirmed images here: the shipping rule alone decides.
    passes = expected["shipping_rule"]["passes"]
    assert new.card["gate"]["verdict"] == (PROMOTED if passes else REJECTED) and new.card["gate"]["hospitals"] == {}
    assert ModelVersion.champion().id == (new.id if passes else champion.id)
    # How it ended, for `retrain --status` and the API.
    status = app.test_cli_runner().invoke(cli, ["retrain", "--status"])
    assert status.exit_code == 0 and f"done, model {new_id}, verdict {new.card['gate']['verdict']}" in status.output
    _, key = make_hospital()
    progress = client.get("/api/v1/retraining", headers={"X-API-Key": key}).get_json()["retraining"]
    assert (progress["stage"], progress["model"]) == ("done", new_id)
    assert event.details == {
        "champion": champion.id, "passes_shipping_rule": expected["shipping_rule"]["passes"],
        "failures": expected["shipping_rule"]["failures"],
        "melanoma_auc_change": expected["figures"]["melanoma AUC"]["difference"],
        "melanoma_auc_change_interval_95": expected["figures"]["melanoma AUC"]["interval_95"]}


def test_retrain_on_other_data_records_why_it_was_not_compared(app, tiny_model, two_sources):
    import worker.tasks  # noqa: F401

    model_dir, _ = tiny_model
    champion = register_model(model_dir, promote=True)
    app.config["RETRAIN_DATA_DIRS"] = [str(two_sources)]
    new_id = app.extensions["celery"].tasks[RETRAIN].apply().get()
    event = db.session.scalar(db.select(AuditEvent).where(AuditEvent.target == f"model:{new_id}",
                                                          AuditEvent.action == "model.not_compared"))
    assert event.details["champion"] == champion.id
    assert "not the data this model was trained on" in event.details["reason"]
    # Nothing tells the two apart: the new one waits, a candidate, for an operator.
    assert db.session.get(ModelVersion, new_id).card["gate"]["verdict"] == UNDECIDED
    assert ModelVersion.champion().id == champion.id


def test_retrain_without_a_data_folder_says_what_to_set(app):
    import worker.tasks  # noqa: F401

    app.config["RETRAIN_DATA_DIRS"] = []
    with pytest.raises(ValueError, match="RETRAIN_DATA_DIRS"):
        app.extensions["celery"].tasks[RETRAIN].apply().get()


def test_retrain_now_says_when_no_training_worker_reads_the_queue(app, tiny_dataset, monkeypatch):
    from worker import retraining

    app.config["RETRAIN_DATA_DIRS"] = [str(tiny_dataset)]  # this test's broker has no worker at all
    queued = app.test_cli_runner().invoke(cli, ["retrain", "--now"])
    assert queued.exit_code == 0 and "no worker consumes the 'training' queue now" in queued.output
    monkeypatch.setattr(retraining, "WORKER_GRACE_SECONDS", 0)  # instead of a minute's grace for one starting
    waited = app.test_cli_runner().invoke(cli, ["retrain", "--now", "--wait"])
    assert waited.exit_code == 1 and "no worker consumes the 'training' queue now" in waited.output
