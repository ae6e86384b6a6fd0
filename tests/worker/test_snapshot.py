"""What retraining learns from the hospitals: their confirmed images, exported beside the base folders, a
fixed share held back by image hash; one retraining at a time."""

import csv
import secrets
import subprocess

import pytest
import redis

from models import AuditEvent, ModelVersion, db
from models.diagnosis import held_back
from tests.conftest import BEAT_REDIS_DB, REDIS_BASE_URL, dataset_images, make_hospital
from web import diagnoses
from web.ingest import Upload, create_batch
from web.queue import RETRAIN
from worker.registry import register_model
from worker.snapshot import export
from worker.tasks import RETRAIN_LOCK


def test_the_held_back_share_is_fixed_by_the_image_hash():
    hashes = [secrets.token_hex(32) for _ in range(5000)]
    share = sum(held_back(digest, 20) for digest in hashes) / len(hashes)
    assert 0.17 < share < 0.23
    assert [held_back(digest, 20) for digest in hashes] == [held_back(digest, 20) for digest in hashes]
    assert not any(held_back(digest, 0) for digest in hashes) and all(held_back(digest, 100) for digest in hashes)


def _confirmed_batch(hospital):
    """Four real pictures, one sent again in a second batch; labels: a changed mind, an `other`, a melanoma."""
    pictures = dataset_images("melanoma", 2) + dataset_images("nevus", 2)
    batch, _ = create_batch(hospital, [Upload(path.name, path.read_bytes()) for path in pictures])
    again, _ = create_batch(hospital, [Upload("again.jpg", pictures[0].read_bytes())])
    first, second, third, _ = batch.images
    outcome = diagnoses.record(hospital, [
        {"image_id": first.id, "diagnosis": "nevus", "method": "clinical"},
        {"image_id": first.id, "diagnosis": "melanoma", "method": "histopathology"},
        {"image_id": second.id, "diagnosis": "other", "method": "histopathology"},
        {"image_id": third.id, "diagnosis": "nevus", "method": "follow-up"},
        {"image_id": again.images[0].id, "diagnosis": "melanoma", "method": "histopathology"},
    ], actor="test")
    assert len(outcome.stored) == 5
    return batch


def test_export_writes_each_pictures_newest_class_once_with_its_hospital_as_source(app, tmp_path):
    hospital, _ = make_hospital("Clinic North")
    batch = _confirmed_batch(hospital)
    first, _, third, _ = batch.images
    snapshot = export(tmp_path / "snap", app.config["STORAGE_DIR"], holdback_percent=0)
    assert sorted((row["sha256"], row["label"]) for row in snapshot.training) == sorted(
        [(first.sha256, "melanoma"), (third.sha256, "nevus")])  # `other` trains nothing; the repeat is one
    assert (tmp_path / "snap" / "melanoma" / f"{first.sha256}.jpg").read_bytes() == \
        dataset_images("melanoma", 1)[0].read_bytes()
    rows = list(csv.DictReader((tmp_path / "snap" / "metadata.csv").open()))
    assert {row["source"] for row in rows} == {"hospital:Clinic North"} and len(rows) == 2
    assert export(tmp_path / "again", app.config["STORAGE_DIR"], 0).sha256 == snapshot.sha256
    everything_back = export(tmp_path / "back", app.config["STORAGE_DIR"], holdback_percent=100)
    assert not everything_back.training and len(everything_back.held_back) == 2
    assert not list((tmp_path / "back" / "melanoma").iterdir())  # a held-back image never enters training
    diagnoses.record(hospital, [{"image_id": third.id, "diagnosis": "dermatofibroma", "method": "consensus"}], "t")
    assert export(tmp_path / "changed", app.config["STORAGE_DIR"], 0).sha256 != snapshot.sha256


def test_a_retraining_asked_for_while_one_runs_is_skipped_and_says_so(app):
    import worker.tasks  # noqa: F401

    lock = redis.Redis.from_url(app.config["REDIS_URL"]).lock(RETRAIN_LOCK, timeout=60)
    assert lock.acquire(blocking=False)
    try:
        assert app.extensions["celery"].tasks[RETRAIN].apply().get() is None
    finally:
        lock.release()
    event = db.session.scalar(db.select(AuditEvent).where(AuditEvent.action == "model.retrain_skipped"))
    assert event.details == {"reason": "another retraining is running"}


def test_retraining_learns_from_the_base_folders_and_the_confirmed_images(app, tiny_dataset, tiny_model):
    import worker.tasks  # noqa: F401

    model_dir, card = tiny_model
    champion = register_model(model_dir, promote=True)
    hospital, _ = make_hospital()
    _confirmed_batch(hospital)
    app.config.update(RETRAIN_DATA_DIRS=[str(tiny_dataset)], HOLDBACK_PERCENT=0)
    new = db.session.get(ModelVersion, app.extensions["celery"].tasks[RETRAIN].apply().get())
    snapshot = new.card["training"]["snapshot"]
    assert snapshot["confirmed_images"] == 2 and snapshot["held_back"] == 0 and len(snapshot["sha256"]) == 64
    assert new.card["training"]["audit"]["kept"] == card["training"]["audit"]["kept"] + 2
    assert new.card["training"]["audit"]["labels_by_source"][f"hospital:{hospital.name}"] == {
        "melanoma": 1, "nevus": 1}
    assert new.card["training"]["source_weights"] == {f"hospital:{hospital.name}": 3}
    assert (ModelVersion.champion().id == new.id) == (new.card["gate"]["verdict"] == "promoted")
    assert ModelVersion.champion().id in (champion.id, new.id)
    # The confirmed images train whole, outside the split: the base split is the champion's, image for image,
    # so the two are compared on test images neither trained on.
    sizes, before = new.card["training"]["split_sizes"], card["training"]["split_sizes"]
    assert (sizes["validation"], sizes["test"]) == (before["validation"], before["test"])
    assert sizes["train"] == before["train"] + 2 * 3
    assert db.session.scalar(db.select(AuditEvent).where(AuditEvent.action == "model.compared",
                                                         AuditEvent.target == f"model:{new.id}"))


@pytest.mark.slow
def test_retrain_now_and_wait_runs_on_a_real_training_worker_and_prints_the_outcome(backend_settings, tiny_dataset,
                                                                                     tiny_model, tmp_path):
    from tests.conftest import MELANOMA_CLI, ROOT, WorkerProcess, empty_tables, worker_env
    from web import create_app
    from web.queue import TRAINING_QUEUE

    settings = {**backend_settings["postgresql"], "INSTANCE_DIR": str(tmp_path / "instance")}
    app = create_app(settings)
    with app.app_context():
        champion = register_model(tiny_model[0], promote=True)
        champion_id = champion.id
        db.engine.dispose()
    env = {"RETRAIN_DATA_DIRS": str(tiny_dataset), "MELANOMA_INSTANCE": settings["INSTANCE_DIR"]}
    trainer = WorkerProcess(settings, tmp_path / "trainer.log", queues=TRAINING_QUEUE, env=env)
    try:
        result = subprocess.run([*MELANOMA_CLI, "retrain", "--now", "--wait"], cwd=ROOT, capture_output=True,
                                text=True, timeout=600, env={**worker_env(settings), **env})
    finally:
        trainer.stop()
    assert result.returncode == 0, result.stderr[-3000:] + trainer.output()[-3000:]
    assert "retraining queued" in result.stdout and " registered, trained in " in result.stdout, result.stdout
    assert "against the champion:" in result.stdout  # same data, same seed: compared on their shared test split
    promoted = "gate: promoted" in result.stdout
    assert promoted or "gate: rejected (" in result.stdout, result.stdout
    with app.app_context():
        try:
            assert (ModelVersion.champion().id != champion_id) == promoted
            assert db.session.scalar(db.select(db.func.count(ModelVersion.id))) == 2
        finally:
            db.session.remove()
            empty_tables()  # this test ran without the app fixture, which empties them after each test
            db.engine.dispose()


@pytest.mark.slow
def test_beat_retrains_on_its_schedule_and_registers_the_result(backend_settings, tiny_dataset, tiny_model, tmp_path):
    import sys
    import time

    from tests.conftest import ROOT, WorkerProcess, empty_tables, worker_env
    from web import create_app
    from web.queue import TRAINING_QUEUE

    redis_url = f"{REDIS_BASE_URL}/{BEAT_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    settings = {**backend_settings["postgresql"], "INSTANCE_DIR": str(tmp_path / "instance"), "REDIS_URL": redis_url}
    app = create_app(settings)
    with app.app_context():
        register_model(tiny_model[0], promote=True)
        db.engine.dispose()
    # Every 9 seconds, so the first run comes soon after beat starts.
    env = {"RETRAIN_DATA_DIRS": str(tiny_dataset), "RETRAIN_SCHEDULE": "0.0025"}
    trainer = WorkerProcess(settings, tmp_path / "trainer.log", queues=TRAINING_QUEUE, env=env)
    beat_log = open(tmp_path / "beat.log", "wb")
    beat = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel", "INFO",
                             "--schedule", str(tmp_path / "beat-schedule")], cwd=ROOT,
                            env={**worker_env(settings), **env}, stdout=beat_log, stderr=subprocess.STDOUT)
    try:
        with app.app_context():
            deadline = time.monotonic() + 400
            while db.session.scalar(db.select(db.func.count(ModelVersion.id))) < 2:
                assert time.monotonic() < deadline, trainer.output()[-3000:]
                assert beat.poll() is None, (tmp_path / "beat.log").read_text()[-3000:]
                time.sleep(2)
                db.session.remove()
            registered = db.session.scalar(db.select(AuditEvent).where(
                AuditEvent.action == "model.registered", AuditEvent.actor == "schedule:retrain"))
            assert registered is not None
    finally:
        beat.terminate()
        beat.wait(timeout=30)
        beat_log.close()
        trainer.stop()
        redis.Redis.from_url(redis_url).flushdb()
        with app.app_context():
            db.session.remove()
            empty_tables()
            db.engine.dispose()
