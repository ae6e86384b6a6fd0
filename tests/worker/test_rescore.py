"""After a promotion, open alerts are scored again by the champion; their earlier predictions stay."""

import redis

from models import Alert, AuditEvent, ModelVersion, Prediction, db
from models.prediction import AlertStatus
from tests.worker.test_inference import _batch, _real_images, _run_task
from web.cli import cli
from web.queue import INFERENCE_QUEUE, RESCORE_ALERTS, task_args_in_broker
from worker import inference
from worker.registry import register_model


def _alerts_by_the_shipped_model(app) -> list[Alert]:
    batch = _batch(_real_images(4))
    _run_task(app, [image.id for image in batch.images][:1])  # the shipped model becomes champion
    ModelVersion.champion().alert_threshold = 0.0  # so every picture alerts
    db.session.commit()
    _run_task(app, [image.id for image in batch.images])
    alerts = list(db.session.scalars(db.select(Alert).order_by(Alert.id)))
    assert len(alerts) == 4
    return alerts


def test_rescoring_moves_open_alerts_to_the_champion_dismisses_those_under_its_threshold_and_keeps_the_rest(
        app, tiny_model):
    alerts = _alerts_by_the_shipped_model(app)
    shipped = ModelVersion.champion().id
    earlier = {alert.id: (alert.prediction_id, alert.melanoma_probability) for alert in alerts}
    alerts[3].heatmap_path = "old/heatmap.png"
    new = register_model(tiny_model[0], promote=True)
    new.alert_threshold = 1.01  # nothing reaches it
    db.session.commit()
    assert inference.rescore_alerts([alert.id for alert in alerts[:2]]) == {
        "rescored": 2, "dismissed": 2, "unreadable": 0}
    new.alert_threshold = 0.0
    db.session.commit()
    # The two dismissed are no longer open, so only the other two are scored.
    assert inference.rescore_alerts([alert.id for alert in alerts]) == {"rescored": 2, "dismissed": 0, "unreadable": 0}
    db.session.expire_all()
    for alert in alerts:
        assert alert.prediction.model_version_id == new.id
        assert alert.melanoma_probability == alert.prediction.melanoma_probability
        assert db.session.get(Prediction, earlier[alert.id][0]).model_version_id == shipped  # kept
    assert [alert.status for alert in alerts] == ["dismissed", "dismissed", "open", "open"]
    assert alerts[3].heatmap_path is None and alerts[3].threshold == 0.0  # drawn again, by the champion
    events = {event.target: event.details for event in db.session.scalars(
        db.select(AuditEvent).where(AuditEvent.action == "alert.rescored"))}
    assert {target: details["earlier_probability"] for target, details in events.items()} == {
        f"alert:{alert_id}": probability for alert_id, (_, probability) in earlier.items()}
    assert events[f"alert:{alerts[0].id}"]["status"] == "dismissed"
    # Once the champion has scored them, nothing changes.
    assert inference.rescore_alerts([alert.id for alert in alerts]) == {"rescored": 0, "dismissed": 0, "unreadable": 0}


def test_melanoma_rescore_queues_the_open_alerts_no_champion_scored(app, tiny_model):
    alerts = _alerts_by_the_shipped_model(app)
    alerts[0].status = AlertStatus.RESOLVED
    db.session.commit()
    register_model(tiny_model[0], promote=True)
    redis.Redis.from_url(app.config["REDIS_URL"]).flushdb()  # this test's broker: no one else's messages
    result = app.test_cli_runner().invoke(cli, ["rescore", "--open-alerts"])
    assert result.exit_code == 0, result.output
    assert "3 open alerts queued to be re-scored" in result.output
    queued = task_args_in_broker(app.extensions["celery"], INFERENCE_QUEUE, RESCORE_ALERTS)
    assert queued == [[[alert.id for alert in alerts[1:]]]]
    assert app.test_cli_runner().invoke(cli, ["rescore"]).exit_code == 2
