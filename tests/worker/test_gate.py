"""The gate after a retraining: promoted only if the shipping rule holds on the base test split and no hospital
with enough held-back melanomas loses; otherwise rejected with the reasons."""

import io

import numpy as np
import pytest
import redis
from PIL import Image

from models import AuditEvent, ModelVersion, db
from models.prediction import ModelStatus
from tests.conftest import make_hospital
from web import diagnoses
from web.ingest import Upload, create_batch
from web.queue import INFERENCE_QUEUE, MEASURE_SHIFT, RETRAIN, SCORE_IMAGES, retrain_progress, task_args_in_broker
from web.reliability import reliability
from worker import inference
from worker.gate import PROMOTED, REJECTED, UNDECIDED, verdict
from worker.registry import register_model

RECIPE = {"epochs": 20, "seed": 1, "input_size": 32, "batch_size": 16, "backbone": "small", "verbose": 0}


def _picture(rng, melanoma: bool) -> bytes:
    """A lesion the tiny network can learn in seconds, melanomas dark and nevi pale, on skin lit and placed
    differently each time (so no two pictures are near duplicates to the audit)."""
    yy, xx = np.mgrid[:40, :40]
    slope = rng.uniform(-2, 2, 2)
    skin = 170 + slope[0] * (yy - 20) + slope[1] * (xx - 20)
    pixels = np.clip(skin[..., None] + rng.integers(-25, 25, (40, 40, 3)), 0, 255)
    y, x = rng.integers(12, 28, 2)
    pixels[(yy - y) ** 2 + (xx - x) ** 2 < rng.integers(40, 120)] = (
        rng.integers(10, 50, 3) if melanoma else rng.integers(110, 150, 3))
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _folder(path, seed: int, count: int, swapped: bool = False, source: str | None = None):
    """count melanomas and nevi (their labels swapped where told) and three images of each other class, all
    of one source where told (a metadata.csv)."""
    from worker.classifier.choices import CLASS_NAMES

    rng = np.random.default_rng(seed)
    for name in CLASS_NAMES:
        (path / name).mkdir(parents=True)
    for index in range(count):
        for melanoma in (True, False):
            label = "melanoma" if melanoma != swapped else "nevus"
            (path / label / f"{int(melanoma)}-{index}.png").write_bytes(_picture(rng, melanoma))
    for name in set(CLASS_NAMES) - {"melanoma", "nevus"}:
        for index in range(3):
            pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            pixels[..., CLASS_NAMES.index(name) % 3] = 90
            Image.fromarray(pixels).save(path / name / f"{name}-{index}.png")
    if source:
        stems = [picture.stem for picture in path.glob("*/*.png")]
        (path / "metadata.csv").write_text("image_id,lesion_id,source\n" + "".join(
            f"{stem},{stem},{source}\n" for stem in stems))
    return path


@pytest.fixture
def backend():
    """PostgreSQL only: each test trains two tiny models, and nothing here differs between the databases."""
    return "postgresql"


@pytest.fixture(scope="module")
def pattern_base(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("pattern") / "base", seed=5, count=30)


def _hospital_with_confirmed_images(swapped: bool):
    hospital, _ = make_hospital()
    rng = np.random.default_rng(11)
    truth = [bool(index % 2) for index in range(60)]
    batch, _ = create_batch(hospital, [Upload(f"{index}.png", _picture(rng, melanoma))
                                       for index, melanoma in enumerate(truth)])
    rows = [{"image_id": image.id, "diagnosis": "melanoma" if melanoma != swapped else "nevus",
             "method": "histopathology"} for image, melanoma in zip(batch.images, truth, strict=True)]
    assert len(diagnoses.record(hospital, rows, actor="test").stored) == 60
    return hospital


def _retrain(app, champion_dir, base):
    import worker.tasks  # noqa: F401  (registers the tasks on this app)

    redis.Redis.from_url(app.config["REDIS_URL"]).flushdb()  # this test's broker: no one else's messages
    champion = register_model(champion_dir, promote=True)
    app.config.update(RETRAIN_DATA_DIRS=[str(base)], HOLDBACK_PERCENT=30, CONFIRMED_IMAGE_WEIGHT=10,
                      GATE_MIN_MELANOMAS=3)
    new = db.session.get(ModelVersion, app.extensions["celery"].tasks[RETRAIN].apply().get())
    db.session.expire_all()
    return champion, new


def test_a_challenger_trained_on_swapped_labels_is_rejected_and_the_champion_keeps_serving(
        app, pattern_base, tmp_path):
    from worker.classifier.training import train

    epochs = []
    train(pattern_base, tmp_path / "champion", progress=lambda epoch, figures: epochs.append((epoch, figures)),
          **RECIPE)
    assert [epoch for epoch, _ in epochs] == list(range(1, RECIPE["epochs"] + 1))
    assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(epochs[-1][1])
    hospital = _hospital_with_confirmed_images(swapped=True)
    champion, new = _retrain(app, tmp_path / "champion", pattern_base)
    assert new.status == ModelStatus.REJECTED and ModelVersion.champion().id == champion.id, new.card["gate"]
    gate = new.card["gate"]
    assert gate["verdict"] == REJECTED and "melanoma AUC does not rise" in gate["reasons"]
    held = gate["hospitals"][f"hospital:{hospital.name}"]
    assert held["melanomas"] >= 3 and held["images"] == new.card["training"]["snapshot"]["held_back"]
    event = db.session.scalar(db.select(AuditEvent).where(AuditEvent.action == "model.rejected"))
    assert event.target == f"model:{new.id}" and event.details["reasons"] == gate["reasons"]


def test_a_better_challenger_is_promoted_and_served_at_the_next_task(app, pattern_base, tmp_path):
    from worker.classifier.training import train
    from worker.serving import serving_model

    # A champion misled by swapped labels of other pictures (trained whole, outside the base split).
    misleading = _folder(tmp_path / "misleading", seed=7, count=20, swapped=True, source="misleading")
    train(pattern_base, tmp_path / "champion", train_only_dirs=[misleading], source_weights={"misleading": 10},
          **RECIPE)
    hospital = _hospital_with_confirmed_images(swapped=False)
    first = register_model(tmp_path / "champion", promote=True)
    assert serving_model().version_id == first.id
    champion, new = _retrain(app, tmp_path / "champion", pattern_base)
    gate = new.card["gate"]
    assert gate["verdict"] == PROMOTED and gate["reasons"] == [], gate
    assert new.is_champion and new.status == ModelStatus.CHAMPION
    assert db.session.get(ModelVersion, champion.id).status == ModelStatus.RETIRED
    held = gate["hospitals"][f"hospital:{hospital.name}"]
    assert held["challenger"]["melanoma AUC"] > held["champion"]["melanoma AUC"]
    assert serving_model().version_id == new.id
    assert db.session.scalar(db.select(AuditEvent).where(AuditEvent.action == "model.promoted",
                                                         AuditEvent.actor == "schedule:retrain"))
    progress = retrain_progress(app)
    assert (progress["stage"], progress["model"], progress["verdict"]) == ("done", new.id, PROMOTED)
    # The held-back images go to the inference workers, to be scored by the new champion: its reliability.
    sent = task_args_in_broker(app.extensions["celery"], INFERENCE_QUEUE, SCORE_IMAGES)
    held_back_ids = sorted(image_id for args in sent for image_id in args[0])
    assert len(held_back_ids) == held["images"]
    assert inference.score_images(held_back_ids) == {"scored": held["images"], "unreadable": 0}
    measured = reliability(hospital)
    assert measured["scored_by_this_model"] == measured["held_back_images"] == held["images"]
    assert measured["melanomas"] == held["melanomas"]
    # And each hospital's shift is measured from the new champion.
    assert task_args_in_broker(app.extensions["celery"], INFERENCE_QUEUE, MEASURE_SHIFT) == [[]]


def _report(failures: list[str]) -> dict:
    return {"shipping_rule": {"passes": not failures, "failures": failures}}


def _hospital(melanomas: int, difference: float | None) -> dict:
    return {"images": 3 * melanomas, "melanomas": melanomas, "melanoma_auc_difference": difference}


def test_the_verdict_counts_only_hospitals_with_enough_melanomas_to_tell():
    fine, few = {"hospital:a": _hospital(12, -0.005)}, {"hospital:b": _hospital(9, -0.3)}
    assert verdict(_report([]), {**fine, **few}, 10) == (PROMOTED, [])
    outcome, reasons = verdict(_report([]), {"hospital:c": _hospital(10, -0.04), **few}, 10)
    assert outcome == REJECTED and reasons == ["melanoma AUC on hospital:c's held-back images falls by 0.040"]
    assert verdict(_report(["melanoma AUC does not rise"]), fine, 10) == (REJECTED, ["melanoma AUC does not rise"])
    assert verdict(_report([]), {"hospital:d": _hospital(0, None)}, 0) == (PROMOTED, [])
    assert verdict(None, fine, 10, "other data") == (UNDECIDED, ["not compared with the champion: other data"])
