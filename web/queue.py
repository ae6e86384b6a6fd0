"""The Celery app, made from the Flask app, and the names of the tasks the web sends.

Tasks are sent by name, so the web process never imports the workers' code (nor TensorFlow).
"""

import base64
import json
from datetime import timedelta

import redis
from celery import Celery, Task
from celery.schedules import crontab
from flask import Flask
from kombu import Queue

CLASSIFY_IMAGES = "inference.classify_images"
EXPLAIN_ALERT = "explain.alert_heatmap"
REQUEUE_STALE = "maintenance.requeue_stale"
RETRAIN = "training.retrain"
RESCORE_ALERTS = "inference.rescore_alerts"
SCORE_IMAGES = "inference.score_images"
MEASURE_SHIFT = "inference.measure_shift"
# How often beat has each hospital's shift measured (worker/shift.py), in seconds.
SHIFT_EVERY_SECONDS = 3600

# What the running (or the last) retraining reported, as JSON: its stage, epoch of epochs, figures, outcome.
RETRAIN_PROGRESS = "melanoma:retrain-progress"
RETRAIN_PROGRESS_DAYS = 7

INFERENCE_QUEUE = "inference"
# Heatmaps have their own queue, so drawing them never holds up the next batch's results.
EXPLAIN_QUEUE = "explain"
TRAINING_QUEUE = "training"
MAINTENANCE_QUEUE = "maintenance"


def celery_init_app(app: Flask) -> Celery:
    """Bind a Celery app to the Flask app: every task runs inside the app context."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    config = app.config
    celery_app = Celery(app.name, task_cls=FlaskTask)
    beat_schedule = {
        "requeue-stale-images": {"task": REQUEUE_STALE, "schedule": 60.0},
        "measure-shift": {"task": MEASURE_SHIFT, "schedule": float(SHIFT_EVERY_SECONDS)},
    }
    if config["RETRAIN_DATA_DIRS"]:
        beat_schedule["retrain"] = {"task": RETRAIN, "schedule": retrain_schedule(config["RETRAIN_SCHEDULE"])}
    celery_app.conf.update(
        broker_url=config["REDIS_URL"],
        result_backend=config["REDIS_URL"],
        **config["CELERY"],
        task_routes={
            "inference.*": {"queue": INFERENCE_QUEUE},
            "explain.*": {"queue": EXPLAIN_QUEUE},
            "training.*": {"queue": TRAINING_QUEUE},
            "maintenance.*": {"queue": MAINTENANCE_QUEUE},
        },
        task_default_queue=INFERENCE_QUEUE,
        # A worker started without --queues serves every queue; production workers name theirs.
        task_queues=[Queue(name) for name in (INFERENCE_QUEUE, EXPLAIN_QUEUE, MAINTENANCE_QUEUE, TRAINING_QUEUE)],
        imports=("worker.tasks",),
        beat_schedule=beat_schedule,
    )
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def retrain_schedule(setting: str) -> crontab | timedelta:
    """The RETRAIN_SCHEDULE setting as beat reads it: a number is hours between runs, anything else a cron
    expression of five fields in UTC. A value that is neither stops the start with what it should look like."""
    try:
        hours = float(setting)
    except ValueError:
        pass
    else:
        if hours <= 0:
            raise ValueError(f"RETRAIN_SCHEDULE={setting!r}: a number of hours between retrainings must be positive")
        return timedelta(hours=hours)
    try:
        return crontab.from_string(setting.strip())
    except (ValueError, TypeError) as error:
        raise ValueError(f"RETRAIN_SCHEDULE={setting!r} is not a cron expression ({error}); give five fields, "
                         "minute hour day-of-month month day-of-week in UTC, e.g. '0 3 * * 0' for Sundays at "
                         "03:00, or a number of hours") from None


def send_classify(app: Flask, image_ids: list[int]) -> None:
    """Queue the images for inference, in chunks the worker predicts as one array each."""
    send_chunks(app, CLASSIFY_IMAGES, image_ids)


def send_chunks(app: Flask, task_name: str, ids: list[int], keep_results: bool = False) -> list:
    """Send an inference task for each INFERENCE_CHUNK_SIZE of ids; returns their AsyncResults."""
    celery_app, chunk = app.extensions["celery"], app.config["INFERENCE_CHUNK_SIZE"]
    return [celery_app.send_task(task_name, args=[ids[start:start + chunk]], queue=INFERENCE_QUEUE,
                                 ignore_result=not keep_results) for start in range(0, len(ids), chunk)]


def task_args_in_broker(celery_app: Celery, queue: str, task_name: str) -> list[list]:
    """The arguments of every `task_name` message the broker holds for `queue`: waiting in the queue, or
    delivered to a worker and not yet acknowledged (a task running, prefetched, or a retry waiting for its
    countdown). Read from Redis as kombu's Redis transport keeps them: a list per queue and priority, and one
    hash of unacknowledged messages. Only Redis brokers are supported."""
    with celery_app.connection_for_read() as connection:
        channel = connection.default_channel
        client = channel.client
        raw = [message for priority in channel.priority_steps
               for message in client.lrange(channel._q_for_pri(queue, priority), 0, -1)]
        # Read after the queue: a message moves from the queue to this hash when a worker takes it.
        unacked = [json.loads(value) for value in client.hvals(channel.unacked_key)]
    messages = [json.loads(message) for message in raw]
    messages += [payload for payload, _exchange, _routing_key in unacked]
    found = []
    for message in messages:
        if message.get("headers", {}).get("task") != task_name:
            continue
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        found.append(args)
    return found


def queue_depth(celery_app: Celery, queue: str) -> int:
    """Messages waiting in the queue (every priority), as kombu's Redis transport keeps them."""
    with celery_app.connection_for_read() as connection:
        channel = connection.default_channel
        return sum(channel.client.llen(channel._q_for_pri(queue, priority)) for priority in channel.priority_steps)


def consumers(celery_app: Celery, queue: str) -> list[str]:
    """The workers consuming this queue now: a broadcast over the broker, one second for the answers."""
    replies = celery_app.control.inspect(timeout=1.0).active_queues() or {}
    return sorted(name for name, queues in replies.items() if any(q["name"] == queue for q in queues))


def retrain_progress(app: Flask) -> dict | None:
    """The last retraining's report (RETRAIN_PROGRESS), or None where none has run for a week."""
    raw = redis.Redis.from_url(app.config["REDIS_URL"]).get(RETRAIN_PROGRESS)
    return json.loads(raw) if raw else None


def report_retrain_progress(app: Flask, **fields) -> None:
    """Best effort: a Redis away for a moment must not stop an hour of training."""
    try:
        redis.Redis.from_url(app.config["REDIS_URL"]).set(RETRAIN_PROGRESS, json.dumps(fields),
                                                          ex=timedelta(days=RETRAIN_PROGRESS_DAYS))
    except redis.exceptions.RedisError as error:
        app.logger.warning("could not report the retraining's progress: %s", error)
