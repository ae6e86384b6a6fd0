from flask import render_template

from models import Alert, Batch, Hospital, db
from models.prediction import AlertStatus, ModelVersion
from web.dashboard import bp


@bp.get("/")
def index():
    alerts = db.session.scalars(
        db.select(Alert).where(Alert.status == AlertStatus.OPEN)
        .order_by(Alert.melanoma_probability.desc(), Alert.id).limit(200)
    ).all()
    batches = db.session.scalars(db.select(Batch).order_by(Batch.id.desc()).limit(50)).all()
    hospitals = {hospital.id: hospital.name for hospital in db.session.scalars(db.select(Hospital))}
    return render_template("dashboard/index.html", alerts=alerts, batches=batches, hospitals=hospitals,
                           champion=ModelVersion.champion())
