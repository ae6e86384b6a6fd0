"""Confirmed diagnoses: what a hospital learned about one of its images (histopathology weeks later,
follow-up, consensus), the labels retraining learns from. Rows are never changed: a new confirmation of the
same image is a new row that names the value it replaced; the newest counts."""

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import db, utcnow

# The nine diagnoses of the ISIC collection, as the classifier names them (worker/classifier/choices.py; a
# test keeps the two lists equal), and "other" for a confirmed diagnosis outside them.
DIAGNOSES = ("actinic keratosis", "basal cell carcinoma", "dermatofibroma", "melanoma", "nevus",
             "pigmented benign keratosis", "seborrheic keratosis", "squamous cell carcinoma", "vascular lesion",
             "other")
METHODS = ("histopathology", "consensus", "follow-up", "clinical")


def held_back(sha256: str, percent: int) -> bool:
    """Whether a confirmed picture is held back from training, as its hospital's evaluation set: the same
    answer for the same picture, in every hospital and every retraining."""
    return int(sha256[:8], 16) % 100 < percent


class ConfirmedDiagnosis(db.Model):
    __tablename__ = "confirmed_diagnoses"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"), index=True)
    diagnosis: Mapped[str] = mapped_column(String(40))
    method: Mapped[str] = mapped_column(String(20))
    # Who confirmed it, as the hospital names them (a pathologist, a clinic); optional.
    confirmed_by: Mapped[str | None] = mapped_column(String(200))
    # Who entered it here: "hospital:<id>" for an API key, a user for the dashboard.
    recorded_by: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    # The diagnosis this one replaced (the image's newest before it), or None for the first.
    replaced: Mapped[str | None] = mapped_column(String(40))

    image = relationship("Image")

    @classmethod
    def counting(cls, image_ids: list[int] | None = None):
        """A select of the diagnoses that count, the newest of each image (of these images, or of all)."""
        latest = db.select(db.func.max(cls.id).label("id")).group_by(cls.image_id)
        if image_ids is not None:
            latest = latest.where(cls.image_id.in_(image_ids))
        return db.select(cls).where(cls.id.in_(latest.scalar_subquery()))

    @classmethod
    def newest(cls, image_ids: list[int]) -> dict[int, "ConfirmedDiagnosis"]:
        """The diagnosis that counts for each of these images that has one."""
        return {row.image_id: row for row in db.session.scalars(cls.counting(image_ids))}


def confirmed_pictures(hospital_id: int | None = None) -> list[tuple["Image", str]]:  # noqa: F821
    """(image, the diagnosis that counts) for every confirmed picture (of one hospital, or of all) that was
    readable; a picture sent several times is one row, its first image."""
    from models.batch import Image, ImageStatus

    counting = ConfirmedDiagnosis.counting().subquery()
    query = (db.select(Image, counting.c.diagnosis).join(counting, counting.c.image_id == Image.id)
             .where(Image.status != ImageStatus.REJECTED).order_by(Image.id))
    if hospital_id is not None:
        query = query.where(Image.hospital_id == hospital_id)
    pictures, seen = [], set()
    for image, diagnosis in db.session.execute(query):
        if image.sha256 not in seen:
            seen.add(image.sha256)
            pictures.append((image, diagnosis))
    return pictures
