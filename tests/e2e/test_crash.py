"""A worker's pool process killed (`kill -9`, as the OOM killer or a native crash in TensorFlow does) several
times during a batch: the worker brings itself back, and every image ends with exactly one prediction."""

import os
import signal
import time

import psutil
import pytest
import redis
import requests

from models import AuditEvent, Image, Prediction, db
from tests.conftest import DATA_DIR, make_hospital, wait_for_batch

KILLS = 3


def _pool_children(worker) -> list[psutil.Process]:
    return [child for child in psutil.Process(worker.process.pid).children() if child.is_running()]


def _done(server: str, batch_id: int, headers: dict) -> dict:
    return requests.get(f"{server}/api/v1/batches/{batch_id}", headers=headers, timeout=30).json()


@pytest.mark.slow
def test_killing_the_pool_process_mid_batch_loses_nothing_and_doubles_nothing(app, live_server, worker):
    app.config["INFERENCE_CHUNK_SIZE"] = 2  # many short tasks, so each kill lands on one
    _, key = make_hospital()
    headers = {"X-API-Key": key}
    paths = sorted(DATA_DIR.glob("*/*.jpg"))[::9][:240]
    response = requests.post(f"{live_server}/api/v1/batches", headers=headers, timeout=120,
                             files=[("files", (f"{path.parent.name}/{path.name}", path.read_bytes()))
                                    for path in paths])
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]

    killed: list[int] = []
    finished_before = 0
    deadline = time.monotonic() + 240
    while len(killed) < KILLS and time.monotonic() < deadline:
        body = _done(live_server, batch_id, headers)
        assert body["status"] != "done", f"the batch finished after {len(killed)} kills; make it longer"
        children = [child for child in _pool_children(worker) if child.pid not in killed]
        # Kill a pool process only once it has classified something since the last kill: it is then up and
        # busy, and the master has had to bring it back by itself.
        if children and body["counts"]["done"] > finished_before:
            os.kill(children[0].pid, signal.SIGKILL)
            killed.append(children[0].pid)
            finished_before = body["counts"]["done"]
        time.sleep(0.2)
    assert len(killed) == KILLS, f"no pool process came back to kill after {killed}:\n{worker.output()[-4000:]}"

    body = wait_for_batch(live_server, batch_id, headers, worker, timeout=300)
    assert body["counts"]["done"] + body["counts"]["rejected"] == len(paths), body
    assert body["counts"]["failed"] == 0, body
    db.session.expire_all()
    predictions = dict(db.session.execute(
        db.select(Image.id, db.func.count(Prediction.id)).outerjoin(Prediction, Prediction.image_id == Image.id)
        .where(Image.batch_id == batch_id, Image.status == "done").group_by(Image.id)).all())
    assert len(predictions) == body["counts"]["done"] and set(predictions.values()) == {1}


@pytest.mark.slow
def test_killing_the_training_process_midway_registers_no_model_and_the_worker_comes_back(backend_settings,
                                                                                          tmp_path):
    """A retraining run killed mid-fit leaves a .partial folder, no model version and no model folder; the
    training worker brings a new pool process up by itself."""
    from models import ModelVersion
    from tests.conftest import WorkerProcess, empty_tables
    from web import create_app
    from web.queue import RETRAIN, TRAINING_QUEUE
    from worker.registry import ensure_champion
    from worker.tasks import RETRAIN_LOCK, RETRAIN_LOCK_SECONDS

    settings = {**backend_settings["postgresql"], "INSTANCE_DIR": str(tmp_path / "instance")}
    data_dir = tmp_path / "data"
    for folder in sorted(path for path in DATA_DIR.iterdir() if path.is_dir()):
        (data_dir / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.jpg"))[:6]:
            (data_dir / folder.name / image.name).write_bytes(image.read_bytes())
    app = create_app(settings)
    with app.app_context():
        ensure_champion(app.config["MODEL_DIR"])  # as every worker does when it starts
        versions_before = db.session.scalar(db.select(db.func.count(ModelVersion.id)))
    trainer = WorkerProcess(settings, tmp_path / "trainer.log", queues=TRAINING_QUEUE,
                            env={"RETRAIN_DATA_DIRS": str(data_dir), "MELANOMA_INSTANCE": settings["INSTANCE_DIR"]})
    models_dir = tmp_path / "instance" / "models"
    broker = redis.Redis.from_url(settings["REDIS_URL"])
    try:
        app.extensions["celery"].send_task(RETRAIN, queue=TRAINING_QUEUE)
        deadline = time.monotonic() + 240
        while not list(models_dir.glob("*.partial")):
            assert time.monotonic() < deadline and trainer.process.poll() is None, trainer.output()[-4000:]
            time.sleep(0.5)
        time.sleep(15)  # into the fit
        (child,) = _pool_children(trainer)
        busy = child.cpu_times()
        print(f"killing the training process after {busy.user + busy.system:.0f} s of CPU")
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while not [c for c in _pool_children(trainer) if c.pid != child.pid]:
            assert time.monotonic() < deadline, f"no new pool process:\n{trainer.output()[-4000:]}"
            time.sleep(0.5)
        assert trainer.process.poll() is None
        # The killed run's lock is not released, but expires by itself, so the next run can start.
        assert 0 < broker.ttl(RETRAIN_LOCK) <= RETRAIN_LOCK_SECONDS
    finally:
        trainer.stop()
        broker.delete(RETRAIN_LOCK)
    assert [path.name.endswith(".partial") for path in models_dir.iterdir()] == [True], list(models_dir.iterdir())
    with app.app_context():
        try:
            assert db.session.scalar(db.select(db.func.count(ModelVersion.id))) == versions_before
            assert not db.session.scalar(db.select(AuditEvent).where(AuditEvent.actor == "schedule:retrain"))
        finally:
            db.session.remove()
            empty_tables()  # this test ran without the app fixture, which empties them after each test
            db.engine.dispose()
