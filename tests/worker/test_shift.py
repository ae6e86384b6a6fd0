"""Each hospital's shift: how well a classifier tells its recent images from the serving model's training images,
in the model's own features; far-off hospitals are flagged in the reliability figures and batch answers."""

import csv
import io

import numpy as np
import pytest
from PIL import Image

from models import ShiftMeasurement, db
from tests.conftest import SHARED, dataset_images, make_hospital
from tests.worker.test_inference import _run_task
from web.ingest import Upload, create_batch
from web.reliability import SHIFT_LIMIT, WARNING, reliability
from worker.classifier import shift
from worker.classifier.choices import CLASS_NAMES
from worker.classifier.perturbations import PERTURBATIONS
from worker.shift import measure_shifts

HAM = SHARED / "datasets" / "ham10000-part"


def test_a_sample_like_the_reference_scores_near_half_and_a_moved_one_near_one():
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(8, 64))

    def draw(count, offset=0.0, classes=(0, 1, 2)):
        """Images of these classes in equal shares, each class its own place in the features."""
        labels = np.resize(np.array(classes), count)
        points = rng.normal(size=(count, 8)) @ directions + rng.normal(scale=0.3, size=(count, 64)) + offset
        return points + 4 * directions[1 + labels], labels

    reference = shift.Reference.fit(draw(600), draw(150), components=8)
    reference = shift.Reference.from_bytes(reference.to_bytes())
    assert reference.sample.shape == (400, 8) and set(reference.sample_classes) == {0, 1, 2}
    alike = reference.shift_auc(*draw(100))
    # A clinic sending only one diagnosis is not, by that alone, far from the training images.
    one_class = reference.shift_auc(*draw(100, classes=(2,)))
    moved = reference.shift_auc(*draw(100, offset=3 * directions[0]))
    assert alike < 0.65 and one_class < 0.65 and moved > 0.9, (alike, one_class, moved)
    with pytest.raises(ValueError, match="at least"):
        reference.shift_auc(*draw(3))


def test_training_keeps_a_reference_beside_the_artifact_and_a_changed_file_is_refused(tiny_model, tmp_path):
    model_dir, card = tiny_model
    entry = card["shift"]
    assert (model_dir / entry["file"]).is_file() and entry["components"] >= 1
    assert shift.read_reference(model_dir, entry).sample.shape[1] == entry["components"]
    copy = tmp_path / entry["file"]
    content = bytearray((model_dir / entry["file"]).read_bytes())
    content[len(content) // 2] ^= 0xFF
    copy.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="hash"):
        shift.read_reference(tmp_path, entry)


def _submit(hospital, paths, camera=None) -> list[int]:
    """Upload these pictures as one batch, each taken through camera (a function of a PIL image) if given."""
    uploads = []
    for path in paths:
        content = path.read_bytes()
        if camera is not None:
            buffer = io.BytesIO()
            camera(Image.open(path).convert("RGB")).save(buffer, format="JPEG", quality=95)
            content = buffer.getvalue()
        uploads.append(Upload(path.name, content))
    batch, _ = create_batch(hospital, uploads)
    return [image.id for image in batch.images]


def test_a_hospital_with_another_dermatoscope_is_flagged_and_one_like_the_training_images_is_not(app):
    with open(HAM / "metadata.csv") as handle:
        queensland = sorted(row["image_id"] for row in csv.DictReader(handle) if row["source"] == "rosendahl")[:60]
    paths = {path.stem: path for path in HAM.glob("*/*.jpg")}
    familiar, _ = make_hospital()
    distant, _ = make_hospital()
    # Seven pictures of each diagnosis from the shipped model's own collection.
    ids = _submit(familiar, [path for name in CLASS_NAMES for path in dataset_images(name, 7)][:60])
    # Every real source here is in the shipped model's training images, so the other dermatoscope is the Queensland
    # clinic's pictures taken through a camera of a third of the resolution.
    ids += _submit(distant, [paths[name] for name in queensland], camera=PERTURBATIONS["low resolution"])
    _run_task(app, ids)
    assert reliability(familiar)["shift"] is None  # not measured yet
    assert measure_shifts(budget_seconds=0)["measured"] == {}  # no time left: the next run measures them

    result = measure_shifts()
    assert set(result["measured"]) == {familiar.id, distant.id}
    near, far = reliability(familiar), reliability(distant)
    assert near["shift"]["images"] == far["shift"]["images"] == 60
    assert near["shift"]["auc"] < SHIFT_LIMIT <= far["shift"]["auc"], (near["shift"], far["shift"])
    assert not near["shift"]["flagged"] and near["warning"] is None
    assert far["shift"]["flagged"] and far["warning"] == WARNING

    # Nothing new: nobody is measured again; a new classified image brings a new measurement.
    assert measure_shifts()["measured"] == {}
    _run_task(app, _submit(familiar, dataset_images("nevus", 31)[30:]))
    assert set(measure_shifts()["measured"]) == {familiar.id}
    assert db.session.scalar(db.select(db.func.count(ShiftMeasurement.id))) == 3


def test_the_cli_shows_the_shift(app):
    from web.cli import cli

    hospital, _ = make_hospital("Shift Clinic")
    result = app.test_cli_runner().invoke(cli, ["hospitals", "reliability", "Shift Clinic"])
    assert result.exit_code == 1 and "no model has served yet" in result.output
    _run_task(app, _submit(hospital, dataset_images("nevus", 50)))
    result = app.test_cli_runner().invoke(cli, ["hospitals", "reliability", "Shift Clinic"])
    assert result.exit_code == 0, result.output
    assert "shift not measured yet" in result.output
    measure_shifts()
    result = app.test_cli_runner().invoke(cli, ["hospitals", "reliability", "Shift Clinic"])
    assert "on its 50 newest pictures" in result.output, result.output


def test_a_model_without_a_reference_gets_one_from_the_folders_it_was_trained_on(runner, tiny_model, tiny_dataset,
                                                                                 two_sources, tmp_path):
    import json
    import shutil

    from web.cli import cli

    model_dir = tmp_path / "older"
    shutil.copytree(tiny_model[0], model_dir)
    card = json.loads((model_dir / "card.json").read_text())
    (model_dir / card.pop("shift")["file"]).unlink()
    (model_dir / "card.json").write_text(json.dumps(card))
    result = runner.invoke(cli, ["models", "reference", str(model_dir), str(two_sources)])
    assert result.exit_code == 1 and "not hold the images the model was split and trained on" in result.output
    result = runner.invoke(cli, ["models", "reference", str(model_dir), str(tiny_dataset)])
    assert result.exit_code == 0, result.output
    entry = json.loads((model_dir / "card.json").read_text())["shift"]
    assert shift.read_reference(model_dir, entry).sample.shape[1] == entry["components"]
    result = runner.invoke(cli, ["models", "reference", str(model_dir), str(tiny_dataset)])
    assert result.exit_code == 1 and "has a shift reference already" in result.output
