"""The model commands of `melanoma` (worker/cli.py), run through the one `melanoma` group."""

import csv
import json
import os
import subprocess

import click
from PIL import Image as PILImage
from PIL import ImageFilter

from models import AuditEvent, ModelVersion, db
from tests.conftest import MELANOMA_CLI, ROOT, dataset_images
from web.cli import cli
from worker.classifier.artifacts import file_sha256


def test_models_register_promote_and_roll_back_switch_the_champion(runner, tmp_path):
    import shutil

    from web.config import DEFAULT_MODEL_DIR

    result = runner.invoke(cli, args=["models", "register", str(DEFAULT_MODEL_DIR), "--promote"])
    assert result.exit_code == 0, result.output
    first = ModelVersion.champion()
    assert first is not None and first.artifact_path.startswith("worker/")
    # A second model: the same network with another calibration card is another artifact.
    second_dir = tmp_path / "second"
    shutil.copytree(DEFAULT_MODEL_DIR, second_dir)
    with open(second_dir / "model.keras", "ab") as artifact:
        artifact.write(b"\0")  # a different file, so a different hash and a new version
    card = json.loads((second_dir / "card.json").read_text())
    card["version"], card["artifact_sha256"] = "second", file_sha256(second_dir / "model.keras")
    (second_dir / "card.json").write_text(json.dumps(card))
    assert runner.invoke(cli, args=["models", "register", str(second_dir), "--promote"]).exit_code == 0
    assert ModelVersion.champion().version == "second"
    listed = runner.invoke(cli, args=["models", "list"]).output
    assert f"* {ModelVersion.champion().id:4d}" in listed
    assert f"dir={DEFAULT_MODEL_DIR.resolve()}" in listed and f"dir={second_dir.resolve()}" in listed
    second = ModelVersion.champion()
    assert (first.status, second.status) == ("retired", "champion")
    assert runner.invoke(cli, args=["models", "promote", str(first.id)]).exit_code == 0
    assert ModelVersion.champion().id == first.id and second.status == "retired"
    # Roll back: the champion before comes back, the one rolled back from is rejected, with the reason.
    rolled = runner.invoke(cli, args=["models", "rollback", "--reason", "missed melanomas at St Example"])
    assert rolled.exit_code == 0, rolled.output
    db.session.expire_all()
    assert ModelVersion.champion().id == second.id and db.session.get(ModelVersion, first.id).status == "rejected"
    event = db.session.scalar(db.select(AuditEvent).where(AuditEvent.action == "model.rejected"))
    assert event.target == f"model:{first.id}" and event.details["reason"] == "missed melanomas at St Example"
    assert "rejected" in runner.invoke(cli, args=["models", "list"]).output
    # Nothing before the rejected one's predecessor was retired: no further rollback.
    again = runner.invoke(cli, args=["models", "rollback"])
    assert again.exit_code != 0 and "no earlier champion" in again.output
    assert runner.invoke(cli, args=["models", "promote", str(first.id)]).exit_code == 0  # an operator may still
    assert ModelVersion.champion().id == first.id
    bad = runner.invoke(cli, args=["models", "register", str(tmp_path)])
    assert bad.exit_code != 0 and "card.json" in bad.output
    assert runner.invoke(cli, args=["models", "promote", "999"]).exit_code != 0


def test_registering_a_model_again_adds_the_card_keys_measured_since_and_changes_nothing_else(runner):
    from models import AuditEvent
    from web.config import DEFAULT_MODEL_DIR

    assert runner.invoke(cli, args=["models", "register", str(DEFAULT_MODEL_DIR)]).exit_code == 0
    version = db.session.scalar(db.select(ModelVersion))
    # As a database that registered the model before its card had the illumination and overexposure limits.
    older = {key: value for key, value in version.card.items()
             if key not in ("illumination_floor", "overexposure_ceiling")}
    version.card, version.alert_threshold = {**older, "alert_threshold": 0.3}, 0.3
    db.session.commit()
    result = runner.invoke(cli, args=["models", "register", str(DEFAULT_MODEL_DIR)])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    version = db.session.get(ModelVersion, version.id)
    card = json.loads((DEFAULT_MODEL_DIR / "card.json").read_text())
    assert version.card["illumination_floor"] == card["illumination_floor"]
    assert version.card["overexposure_ceiling"] == card["overexposure_ceiling"]
    assert version.card["alert_threshold"] == 0.3 and version.alert_threshold == 0.3  # the operator's stays
    event = db.session.scalar(db.select(AuditEvent).where(AuditEvent.action == "model.card_extended"))
    assert event.details["keys"] == ["illumination_floor", "overexposure_ceiling"]
    assert db.session.scalar(db.select(db.func.count(ModelVersion.id))) == 1


def test_predict_writes_the_results_csv_without_a_server(tmp_path):
    images = dataset_images("melanoma", 2) + dataset_images("dermatofibroma", 2)
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    for path in images:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    PILImage.open(images[0]).filter(ImageFilter.GaussianBlur(2)).save(folder / "blurred.png")
    out = tmp_path / "results.csv"
    result = subprocess.run([*MELANOMA_CLI, "predict", str(tmp_path / "in"), "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6
    by_name = {os.path.basename(row["filename"]): row for row in rows}
    assert by_name["broken.jpg"]["status"] == "rejected" and by_name["broken.jpg"]["rejection_reason"]
    assert by_name["broken.jpg"]["alert"] == "false"
    for path in images:
        row = by_name[path.name]
        assert row["status"] == "done" and row["alert"] in ("true", "false")
        assert 0.0 <= float(row["melanoma_probability"]) <= 1.0
        assert row["quality_warning"] == ""
    assert by_name["blurred.png"]["status"] == "done"
    assert "blurred or low resolution" in by_name["blurred.png"]["quality_warning"]


def test_predict_refuses_a_missing_path(tmp_path):
    result = subprocess.run([*MELANOMA_CLI, "predict", str(tmp_path / "nope"), "--out", str(tmp_path / "r.csv")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "no such file or folder" in result.stderr


def test_train_offers_every_augmentation_colour_and_loss_the_pipeline_has():
    from worker.classifier.choices import COLOUR_NORMALISATIONS, LOSSES
    from worker.classifier.data import AUGMENTATIONS

    options = {param.name: param for param in cli.get_command(click.Context(cli), "train").params}
    assert set(options["augmentation"].type.choices) == set(AUGMENTATIONS)
    assert set(options["colour"].type.choices) == set(COLOUR_NORMALISATIONS)
    assert set(options["loss"].type.choices) == set(LOSSES)
