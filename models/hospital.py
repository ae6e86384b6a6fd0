import datetime as dt
import hashlib
import secrets

from sqlalchemy import JSON, DateTime, Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import db, utcnow

API_KEY_PREFIX = "mk_"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Hospital(db.Model):
    __tablename__ = "hospitals"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    api_keys: Mapped[list["ApiKey"]] = relationship(back_populates="hospital")

    def issue_api_key(self) -> str:
        """Create a new key for this hospital; the plain key is returned once and only its hash is kept."""
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        self.api_keys.append(ApiKey(key_hash=hash_api_key(key), prefix=key[:10]))
        return key


class ApiKey(db.Model):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters, so an operator can tell keys apart without the secret.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    hospital: Mapped[Hospital] = relationship(back_populates="api_keys")

    @classmethod
    def find_hospital(cls, key: str) -> Hospital | None:
        """The hospital that owns this plain key, if the key is known and not revoked."""
        api_key = db.session.scalar(
            db.select(cls).where(cls.key_hash == hash_api_key(key), cls.revoked_at.is_(None))
        )
        return api_key.hospital if api_key else None


class AuditEvent(db.Model):
    """Who did what and when: submissions, model registrations and promotions, alert changes."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict] = mapped_column(JSON, default=dict)

    @classmethod
    def record(cls, actor: str, action: str, target: str, **details) -> "AuditEvent":
        event = cls(actor=actor, action=action, target=target, details=details)
        db.session.add(event)
        return event


class ShiftMeasurement(db.Model):
    """How far one hospital's recent images lay from a model's training images, in that model's features
    (worker/classifier/shift.py): the AUC of a classifier telling the two apart, 0.5 when it cannot."""

    __tablename__ = "shift_measurements"

    id: Mapped[int] = mapped_column(primary_key=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    measured_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    images: Mapped[int] = mapped_column()
    # The newest image measured: the hospital is measured again once it has classified images after it.
    last_image_id: Mapped[int] = mapped_column()
    auc: Mapped[float] = mapped_column(Float)
