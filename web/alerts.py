"""What a dermatologist (on the alert page) or a hospital system (through the API) does with an alert:
acknowledge it, take it on, comment, resolve it with a confirmed diagnosis, or dismiss it with a reason. Each
action is an audit event on the alert, which is its history. A resolution is also a confirmed diagnosis of the
picture (web/diagnoses.py), the record retraining learns from."""

from models import Alert, AuditEvent, Hospital, db, utcnow
from models.prediction import AlertStatus
from web import diagnoses

MAX_TEXT = 2000
CLOSED = (AlertStatus.RESOLVED, AlertStatus.DISMISSED)


class ActionRefused(ValueError):
    """Why the action cannot be done, in words for the person who tried."""


def target(alert: Alert) -> str:
    return f"alert:{alert.id}"


def history(alert: Alert) -> list[AuditEvent]:
    return db.session.scalars(db.select(AuditEvent).where(AuditEvent.target == target(alert))
                              .order_by(AuditEvent.at, AuditEvent.id)).all()


def _open(alert: Alert) -> None:
    if alert.status in CLOSED:
        raise ActionRefused(f"alert {alert.id} is {alert.status} already")


def acknowledge(alert: Alert, actor: str) -> None:
    _open(alert)
    if alert.status != AlertStatus.ACKNOWLEDGED:
        alert.status, alert.acknowledged_at = AlertStatus.ACKNOWLEDGED, utcnow()
        AuditEvent.record(actor, "alert.acknowledged", target(alert))
    db.session.commit()


def assign(alert: Alert, user, actor: str) -> None:
    _open(alert)
    alert.assigned_user_id = user.id
    AuditEvent.record(actor, "alert.assigned", target(alert), to=user.email)
    db.session.commit()


def comment(alert: Alert, text: str, actor: str) -> None:
    text = (text or "").strip()
    if not text:
        raise ActionRefused("the comment is empty")
    AuditEvent.record(actor, "alert.commented", target(alert), comment=text[:MAX_TEXT])
    db.session.commit()


def resolve(alert: Alert, diagnosis: str, method: str, actor: str, confirmed_by: str | None = None) -> dict:
    """Close the alert with the picture's confirmed diagnosis, stored on every copy of it the hospital sent;
    returns the stored label (id, diagnosis, method, replaced)."""
    _open(alert)
    image = alert.prediction.image
    hospital = db.session.get(Hospital, alert.hospital_id)
    row = {"sha256": image.sha256, "diagnosis": diagnosis, "method": method}
    if confirmed_by:
        row["confirmed_by"] = confirmed_by
    outcome = diagnoses.record(hospital, [row], actor=actor)
    if outcome.refused:
        raise ActionRefused(outcome.refused[0]["reason"])
    label = next(entry for entry in outcome.stored + outcome.unchanged if entry["image_id"] == image.id)
    alert.status, alert.resolved_at = AlertStatus.RESOLVED, utcnow()
    AuditEvent.record(actor, "alert.resolved", target(alert), diagnosis=label["diagnosis"], method=label["method"],
                      confirmed_by=confirmed_by, label_id=label["id"], replaced=label.get("replaced"))
    db.session.commit()
    return label


def dismiss(alert: Alert, reason: str, actor: str) -> None:
    _open(alert)
    reason = (reason or "").strip()
    if not reason:
        raise ActionRefused("say why the alert is dismissed")
    alert.status, alert.resolved_at = AlertStatus.DISMISSED, utcnow()
    AuditEvent.record(actor, "alert.dismissed", target(alert), reason=reason[:MAX_TEXT])
    db.session.commit()
