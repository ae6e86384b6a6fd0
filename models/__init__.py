"""Database records (SQLAlchemy ORM), shared by the web app and the workers; imports neither."""

from models.base import db, utcnow
from models.batch import Batch, Image
from models.diagnosis import ConfirmedDiagnosis
from models.hospital import ApiKey, AuditEvent, Hospital, ShiftMeasurement
from models.prediction import Alert, ModelVersion, Prediction
from models.user import Role, User

__all__ = [
    "db", "utcnow", "Hospital", "ApiKey", "AuditEvent", "Batch", "Image", "Prediction", "Alert", "ModelVersion",
    "ConfirmedDiagnosis", "ShiftMeasurement", "User", "Role",
]
