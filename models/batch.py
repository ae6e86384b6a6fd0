import datetime as dt

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import db, utcnow


class BatchStatus:
    QUEUED = "queued"
    DONE = "done"


class ImageStatus:
    QUEUED = "queued"
    DONE = "done"
    REJECTED = "rejected"  # not a readable image: the hospital must resend it
    FAILED = "failed"  # our side failed after retries; the reason says why


class Batch(db.Model):
    __tablename__ = "batches"
    # A hospital that resends after a network failure reuses its key and gets the same batch back.
    __table_args__ = (UniqueConstraint("hospital_id", "idempotency_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default=BatchStatus.QUEUED, index=True)
    image_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    hospital = relationship("Hospital")
    images: Mapped[list["Image"]] = relationship(back_populates="batch", order_by="Image.id")

    def counts(self) -> dict[str, int]:
        """Images by status, plus the alerts raised and the images too blurred to trust, read from the rows
        (no counters to drift)."""
        from models.prediction import Alert, Prediction

        rows = db.session.execute(
            db.select(Image.status, db.func.count()).where(Image.batch_id == self.id).group_by(Image.status)
        ).all()
        counts = {status: 0 for status in (ImageStatus.QUEUED, ImageStatus.DONE, ImageStatus.REJECTED,
                                           ImageStatus.FAILED)}
        counts.update({status: count for status, count in rows})
        counts["alerts"] = db.session.scalar(
            db.select(db.func.count(Alert.id)).join(Prediction).join(Image).where(Image.batch_id == self.id)
        )
        counts["quality_warnings"] = db.session.scalar(
            db.select(db.func.count(db.distinct(Prediction.image_id))).join(Image)
            .where(Image.batch_id == self.id, Prediction.quality_warning.is_not(None))
        )
        return counts

    def finish_if_complete(self) -> bool:
        """Mark the batch done once no image is waiting; safe to call from several workers at once."""
        waiting = db.session.scalar(
            db.select(db.func.count(Image.id)).where(Image.batch_id == self.id,
                                                     Image.status == ImageStatus.QUEUED)
        )
        if waiting:
            return False
        result = db.session.execute(
            db.update(Batch).where(Batch.id == self.id, Batch.finished_at.is_(None))
            .values(status=BatchStatus.DONE, finished_at=utcnow())
        )
        return result.rowcount == 1


class Image(db.Model):
    __tablename__ = "images"
    __table_args__ = (db.Index("ix_images_hospital_id_sha256", "hospital_id", "sha256"),
                      db.Index("ix_images_hospital_id_patient_ref", "hospital_id", "patient_ref"))

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    # The hospital's pseudonymous codes for the patient and the lesion, where it sent them (web/references.py).
    patient_ref: Mapped[str | None] = mapped_column(String(100))
    lesion_ref: Mapped[str | None] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # Where the bytes live, relative to the storage root; identical content is stored once.
    storage_path: Mapped[str | None] = mapped_column(String(300))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(20), default=ImageStatus.QUEUED, index=True)
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    batch: Mapped[Batch] = relationship(back_populates="images")
    predictions = relationship("Prediction", back_populates="image", order_by="Prediction.id")
