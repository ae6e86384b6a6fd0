import datetime as dt

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import db, utcnow


class ModelStatus:
    CANDIDATE = "candidate"  # registered, never served
    CHAMPION = "champion"  # serving: exactly one
    RETIRED = "retired"  # served once and replaced; `models rollback` brings the newest back
    REJECTED = "rejected"  # judged worse (rolled back from, or refused by a gate); the audit trail says why


class ModelVersion(db.Model):
    """A trained CNN the workers can serve; exactly one is the champion that new images go to."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(100))
    artifact_path: Mapped[str] = mapped_column(String(500))
    artifact_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    class_names: Mapped[list] = mapped_column(JSON)
    input_size: Mapped[int] = mapped_column(Integer)
    alert_threshold: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    card: Mapped[dict] = mapped_column(JSON, default=dict)
    is_champion: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    status: Mapped[str] = mapped_column(String(20), default=ModelStatus.CANDIDATE,
                                        server_default=ModelStatus.CANDIDATE)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    promoted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    @classmethod
    def champion(cls) -> "ModelVersion | None":
        return db.session.scalar(db.select(cls).where(cls.is_champion.is_(True)).order_by(cls.promoted_at.desc()))

    def promote(self) -> None:
        """Make this version the one new images are classified with; the previous champion is retired, and
        `models rollback` can bring it back."""
        db.session.execute(db.update(ModelVersion).where(ModelVersion.id != self.id, ModelVersion.is_champion.is_(True))
                           .values(is_champion=False, status=ModelStatus.RETIRED))
        self.is_champion, self.status = True, ModelStatus.CHAMPION
        self.promoted_at = utcnow()

    @classmethod
    def previous_champion(cls) -> "ModelVersion | None":
        """The champion before this one: the retired version promoted last."""
        return db.session.scalar(db.select(cls).where(cls.status == ModelStatus.RETIRED, cls.promoted_at.is_not(None))
                                 .order_by(cls.promoted_at.desc()))

    @classmethod
    def rollback(cls, actor: str, reason: str) -> tuple["ModelVersion", "ModelVersion | None"]:
        """Serve the previous champion again and mark the current one rejected, with the reason; returns
        (the champion again, the one rejected). Raises LookupError when there is no earlier champion."""
        from models.hospital import AuditEvent

        champion, previous = cls.champion(), cls.previous_champion()
        if previous is None:
            raise LookupError("no earlier champion to roll back to")
        previous.promote()
        if champion is not None:
            champion.status = ModelStatus.REJECTED
            AuditEvent.record(actor, "model.rejected", f"model:{champion.id}", label=champion.label, reason=reason)
        AuditEvent.record(actor, "model.rolled_back", f"model:{previous.id}", label=previous.label,
                          replaced=champion.id if champion else None)
        db.session.commit()
        return previous, champion

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


class Prediction(db.Model):
    __tablename__ = "predictions"
    # Exactly one prediction per image and model version, however often a task runs.
    __table_args__ = (UniqueConstraint("image_id", "model_version_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    probabilities: Mapped[dict] = mapped_column(JSON)  # class name -> probability, all 9 classes
    predicted_class: Mapped[str] = mapped_column(String(100))
    melanoma_probability: Mapped[float] = mapped_column(Float)
    # Fine detail the network got (worker.classifier.images.sharpness) and, where it was too little for the
    # model's score to be trusted, why: the hospital sees it with the result.
    sharpness: Mapped[float | None] = mapped_column(Float)
    quality_warning: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The same picture (by content) classified earlier by this model for this hospital: its result is reused,
    # and it raises no second alert.
    repeat_of_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id"))

    image = relationship("Image", back_populates="predictions")
    repeat_of = relationship("Prediction", remote_side=[id])
    model_version: Mapped[ModelVersion] = relationship()
    alert = relationship("Alert", back_populates="prediction", uselist=False)


class AlertStatus:
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"  # judged no alert: re-scored under the champion's threshold, or by a dermatologist
    ALL = (OPEN, ACKNOWLEDGED, RESOLVED, DISMISSED)


class Alert(db.Model):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"), unique=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"), index=True)
    melanoma_probability: Mapped[float] = mapped_column(Float, index=True)
    threshold: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(20), default=AlertStatus.OPEN, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Occlusion heatmap PNG in image storage (relative path), once a worker has drawn it.
    heatmap_path: Mapped[str | None] = mapped_column(String(300))
    # Deliveries of the heatmap task begun on this alert, and why the last one failed: the sweep that sends
    # lost heatmap tasks again stops at MAX_ATTEMPTS, and the API says why there is no heatmap.
    heatmap_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    heatmap_error: Mapped[str | None] = mapped_column(Text)
    # The dermatologist who took the alert on ("assign to me"); the audit trail keeps who did what.
    assigned_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    prediction: Mapped[Prediction] = relationship(back_populates="alert")
    assigned_user = relationship("User")
