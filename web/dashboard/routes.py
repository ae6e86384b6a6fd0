from flask import render_template

from models import Alert, Batch, Hospital, db
from models.prediction import AlertStatus, ModelVersion
from web.dashboard import bp

# Open alerts listed, highest melanoma probability first; the page says how many more there are.
ALERTS_SHOWN = 200


@bp.get("/")
def index():
    alerts = db.session.scalars(
        db.select(Alert).where(Alert.status == AlertStatus.OPEN)
        .order_by(Alert.melanoma_probability.desc(), Alert.id).limit(ALERTS_SHOWN)
    ).all()
    open_alerts = db.session.scalar(db.select(db.func.count(Alert.id)).where(Alert.status == AlertStatus.OPEN))
    batches = db.session.scalars(db.select(Batch).order_by(Batch.id.desc()).limit(50)).all()
    hospitals = {hospital.id: hospital.name for hospital in db.session.scalars(db.select(Hospital))}
    return render_template("dashboard/index.html", alerts=alerts, open_alerts=open_alerts, batches=batches,
                           hospitals=hospitals, champion=ModelVersion.champion())
