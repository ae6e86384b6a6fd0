"""A worker's pool process killed (`kill -9`, as the OOM killer or a native crash in TensorFlow does) several
times during a batch: the worker brings itself back, and every image ends with exactly one prediction."""

import os
import signal
import time

import psutil
import pytest
import requests

from models import Image, Prediction, db
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
