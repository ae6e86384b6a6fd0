"""The sweep (maintenance.requeue_stale, every minute from beat): work the database says is waiting and no
message in the real Redis broker carries is queued again; work the broker holds, waiting or taken by a
worker, is never sent twice."""

import datetime as dt

import pytest
import redis

from models import Alert, Image, db, utcnow
from tests.worker.test_inference import _batch, _real_images, champion_threshold_zero
from web.queue import INFERENCE_QUEUE, REQUEUE_STALE, task_args_in_broker


def _sweep(app) -> dict:
    import worker.tasks  # noqa: F401  (registers the tasks on this app)

    return app.extensions["celery"].tasks[REQUEUE_STALE].apply().get()


def _age_everything(seconds: float) -> None:
    db.session.execute(db.update(Image).values(updated_at=utcnow() - dt.timedelta(seconds=seconds)))
    db.session.execute(db.update(Alert).values(created_at=utcnow() - dt.timedelta(seconds=seconds)))
    db.session.commit()


def _take_without_ack(connection, queue: str) -> None:
    """What a worker does with a message it runs or prefetches: off the queue, unacknowledged until the
    worker acks it (or its connection closes, which gives it back)."""
    assert connection.default_channel.basic_get(queue, no_ack=False) is not None


@pytest.fixture
def broker(app):
    client = redis.Redis.from_url(app.config["REDIS_URL"])
    client.flushdb()
    yield client
    client.flushdb()


@pytest.mark.parametrize("where, age_seconds, requeued", [
    ("lost", 3600, 2),  # the broker restarted empty
    ("lost", 0, 0),  # just committed: the web may not have sent it yet
    ("queued", 3600, 0),  # a backlog: waiting its turn
    ("taken", 3600, 0),  # a worker is running it, or holds it for a retry's countdown
])
def test_waiting_images_are_sent_again_only_when_no_message_carries_them(app, broker, where, age_seconds, requeued):
    batch = _batch(_real_images(2))
    ids = [image.id for image in batch.images]
    with app.extensions["celery"].connection_for_write() as worker_connection:
        if where == "lost":
            broker.delete(INFERENCE_QUEUE)
        elif where == "taken":
            _take_without_ack(worker_connection, INFERENCE_QUEUE)
            assert broker.llen(INFERENCE_QUEUE) == 0 and broker.hlen("unacked") == 1
        _age_everything(age_seconds)
        before = broker.llen(INFERENCE_QUEUE)
        assert _sweep(app)["images"] == requeued
        assert broker.llen(INFERENCE_QUEUE) - before == (1 if requeued else 0)
    if requeued:
        assert task_args_in_broker(app.extensions["celery"], INFERENCE_QUEUE, "inference.classify_images") == [[ids]]


def test_a_backlog_of_other_images_does_not_hide_lost_ones(app, broker):
    lost = _batch(_real_images(2))
    broker.delete(INFERENCE_QUEUE)
    waiting = _batch(_real_images(2))
    _age_everything(3600)
    assert _sweep(app)["images"] == 2
    carried = task_args_in_broker(app.extensions["celery"], INFERENCE_QUEUE, "inference.classify_images")
    assert sorted(carried) == sorted([[[image.id for image in waiting.images]], [[image.id for image in lost.images]]])
    assert _sweep(app)["images"] == 0  # the next minute's sweep finds them all carried


def test_alerts_left_without_a_heatmap_are_queued_again_once(app, broker):
    batch = _batch(_real_images(2))
    champion_threshold_zero(app, [image.id for image in batch.images])
    broker.delete("explain", INFERENCE_QUEUE)  # the heatmap messages were lost
    _age_everything(3600)
    assert _sweep(app)["heatmaps"] == 2 and broker.llen("explain") == 2
    assert _sweep(app)["heatmaps"] == 0 and broker.llen("explain") == 2
