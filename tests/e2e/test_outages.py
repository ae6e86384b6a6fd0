"""PostgreSQL and Redis restarted in the middle of a batch, with the default settings, through a real
worker, beat and the HTTP API: nothing is lost, nothing is classified twice, the batch completes within
about two minutes of the dependency returning, and while it is down the API answers 503, never 500."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import requests
from flask_migrate import upgrade
from werkzeug.serving import make_server

from models import Image, Prediction, db
from tests.conftest import DATA_DIR, ROOT, TEST_SECRET, WorkerProcess, make_hospital, wait_for_batch, worker_env
from tests.e2e.services import PrivatePostgres, PrivateRedis
from web import create_app
from web.queue import CLASSIFY_IMAGES, INFERENCE_QUEUE, task_args_in_broker

BACK_WITHIN_SECONDS = 150  # "about two minutes" of the dependency returning
DOWN_SECONDS = 15


class Stack:
    """The system on a PostgreSQL and a Redis of its own: a worker, beat and the web on a real port."""

    def __init__(self, home: Path):
        self.postgres, self.redis = PrivatePostgres(), PrivateRedis()
        self.settings = {"SECRET_KEY": TEST_SECRET, "SQLALCHEMY_DATABASE_URI": self.postgres.url,
                         "REDIS_URL": self.redis.url, "STORAGE_DIR": str(home / "images"), "INSTANCE_DIR": str(home)}
        self.app = create_app(self.settings)
        with self.app.app_context():
            upgrade()
            _, self.key = make_hospital()
        self.worker = WorkerProcess(self.settings, home / "worker.log")
        self.beat_log = open(home / "beat.log", "wb")
        self.beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel", "INFO",
             "--schedule", str(home / "celerybeat-schedule")],
            cwd=ROOT, env=worker_env(self.settings), stdout=self.beat_log, stderr=subprocess.STDOUT)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.headers = {"X-API-Key": self.key}

    def submit(self, paths: list[Path]) -> int:
        response = requests.post(f"{self.url}/api/v1/batches", headers=self.headers, timeout=120,
                                 files=[("files", (f"{p.parent.name}/{p.name}", p.read_bytes())) for p in paths])
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def batch(self, batch_id: int) -> requests.Response:
        return requests.get(f"{self.url}/api/v1/batches/{batch_id}", headers=self.headers, timeout=30)

    def wait_until_started(self, batch_id: int) -> None:
        deadline = time.monotonic() + 180
        while self.batch(batch_id).json()["counts"]["done"] == 0:
            assert time.monotonic() < deadline, self.worker.output()[-4000:]
            time.sleep(0.2)

    def check_complete(self, batch_id: int, back_at: float, images: int) -> float:
        """The batch done, every image with exactly one prediction; seconds from the dependency's return."""
        body = wait_for_batch(self.url, batch_id, self.headers, self.worker, timeout=BACK_WITHIN_SECONDS)
        took = time.monotonic() - back_at
        assert body["counts"]["done"] + body["counts"]["rejected"] == images and body["counts"]["failed"] == 0, body
        with self.app.app_context():
            predictions = db.session.execute(
                db.select(db.func.count(Prediction.id)).join(Image).where(Image.batch_id == batch_id)
                .group_by(Image.id)).scalars().all()
        assert len(predictions) == body["counts"]["done"] and set(predictions) == {1}
        print(f"batch {batch_id} of {images} images done {took:.0f} s after the dependency returned")
        return took

    def logs(self) -> str:
        return self.worker.output()[-3000:] + "\n--- beat ---\n" + Path(self.beat_log.name).read_text()[-2000:]

    def close(self) -> None:
        self.server.shutdown()
        self.worker.stop()
        self.beat.terminate()
        self.beat.wait(timeout=30)
        self.beat_log.close()
        self.redis.stop()
        self.postgres.remove()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("outages"))
    yield stack
    stack.close()


def _images(count: int, offset: int) -> list[Path]:
    return sorted(DATA_DIR.glob("*/*.jpg"))[offset::3][:count]


def _assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0 and response.json()["error"]


@pytest.mark.slow
def test_postgresql_restarted_mid_batch_loses_nothing_and_the_api_answers_503_meanwhile(stack):
    paths = _images(600, 0)
    batch_id = stack.submit(paths)
    stack.wait_until_started(batch_id)
    stack.postgres.stop()
    down_at = time.monotonic()
    _assert_unavailable(stack.batch(batch_id))
    _assert_unavailable(requests.get(f"{stack.url}/api/v1/alerts", headers=stack.headers, timeout=30))
    ready = requests.get(f"{stack.url}/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"
    assert requests.get(f"{stack.url}/healthz", timeout=30).status_code == 200
    time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_at)))
    stack.postgres.start()
    back_at = time.monotonic()
    assert stack.batch(batch_id).status_code == 200  # the web's pool reconnects at once
    stack.check_complete(batch_id, back_at, len(paths))
    assert "retrying images" in stack.worker.output()  # the outage was felt by the tasks, and retried


@pytest.mark.slow
def test_redis_restarted_empty_mid_batch_loses_nothing(stack):
    paths = _images(600, 1)
    batch_id = stack.submit(paths)
    stack.wait_until_started(batch_id)
    # Chunks of the batch are queued or running, and about to be lost.
    assert task_args_in_broker(stack.app.extensions["celery"], INFERENCE_QUEUE, CLASSIFY_IMAGES)
    run_id = redis.Redis.from_url(stack.redis.url).info("server")["run_id"]
    stack.redis.stop()
    down_at = time.monotonic()
    assert stack.batch(batch_id).status_code == 200  # reading needs only the database
    # An upload while the queue is down is stored, and sent once Redis is back.
    during = _images(20, 2)
    during_id = stack.submit(during)
    ready = requests.get(f"{stack.url}/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["checks"]["redis"] != "ok"
    time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_at)))
    stack.redis.start()
    back_at = time.monotonic()
    # A new process without persistence: every queued message is gone. (Its size is no proof: the worker
    # and beat reconnect within milliseconds and declare their queues again.)
    assert redis.Redis.from_url(stack.redis.url).info("server")["run_id"] != run_id
    try:
        stack.check_complete(batch_id, back_at, len(paths))
        stack.check_complete(during_id, back_at, len(during))
    except BaseException:
        print(stack.logs())
        raise
