"""Scheduled retraining: trains with the champion's recipe and registers the result without promoting it."""

import pytest

from models import AuditEvent, ModelVersion, db
from web.queue import RETRAIN
from worker.registry import register_model


def test_retrain_registers_a_new_model_and_leaves_the_champion_serving(app, tiny_dataset, tiny_model):
    import worker.tasks  # noqa: F401  (registers the tasks on this app)

    model_dir, card = tiny_model
    champion = register_model(model_dir, promote=True)
    app.config["RETRAIN_DATA_DIR"] = str(tiny_dataset)
    new_id = app.extensions["celery"].tasks[RETRAIN].apply().get()
    db.session.expire_all()
    new = db.session.get(ModelVersion, new_id)
    assert new.id != champion.id and not new.is_champion
    assert ModelVersion.champion().id == champion.id
    assert new.card["training"]["backbone"] == card["training"]["backbone"] == "small"
    assert new.input_size == card["input_size"] and new.card["training"]["epochs"] == card["training"]["epochs"]
    # The champion's own recipe, not the small backbone's defaults.
    assert new.card["training"]["colour"] == "field-standardise" and new.card["training"]["style_mix"] is True
    assert new.card["training"]["augmentation"] == "rim" and new.card["training"]["loss"] == "logit-adjusted"
    assert db.session.scalar(db.select(AuditEvent).where(AuditEvent.actor == "schedule:retrain"))


def test_retrain_without_a_data_folder_says_what_to_set(app):
    import worker.tasks  # noqa: F401

    app.config["RETRAIN_DATA_DIR"] = ""
    with pytest.raises(ValueError, match="RETRAIN_DATA_DIR"):
        app.extensions["celery"].tasks[RETRAIN].apply().get()
