"""Turning an upload into a batch: store each file once, write all rows in one transaction, queue the work."""

import hashlib
import io
import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from flask import current_app
from PIL import Image as PILImage
from sqlalchemy.exc import IntegrityError

from models import AuditEvent, Batch, Hospital, Image, db
from models.batch import ImageStatus
from web.queue import send_classify
from web.storage import ImageStore

log = logging.getLogger(__name__)

# The words of the workers' decoder (worker/classifier/images.py) too: one rule, said the same way.
NOT_AN_IMAGE = "not an image we can read: the content is not a JPEG or PNG picture"
TOO_LARGE = "the picture claims more pixels than any dermoscopic photograph (a decompression bomb?)"

@dataclass
class Upload:
    """One file of a batch. A file over the size limit is never read into memory: data is then empty, and
    size and sha256 were measured on its stream."""

    filename: str
    data: bytes
    size: int | None = None
    sha256: str | None = None

    @classmethod
    def from_stream(cls, filename: str, stream, max_bytes: int) -> "Upload":
        stream.seek(0, io.SEEK_END)
        size = stream.tell()
        stream.seek(0)
        if size <= max_bytes:
            return cls(filename, stream.read())
        digest = hashlib.sha256()
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
        return cls(filename, b"", size=size, sha256=digest.hexdigest())

    @property
    def byte_count(self) -> int:
        return len(self.data) if self.size is None else self.size

    @property
    def digest(self) -> str:
        return self.sha256 or hashlib.sha256(self.data).hexdigest()


def check_image(data: bytes, max_bytes: int, size: int | None = None, *, formats: frozenset[str],
                max_pixels: int) -> str | None:
    """A cheap look at the header: the reason the file cannot be classified, or None if it looks fine.

    size is the file's size when data was not read (over the limit). formats and max_pixels are the
    IMAGE_FORMATS and MAX_IMAGE_PIXELS settings, which the worker's decoder applies too; it decodes fully and
    rejects what only a full decode finds (a truncated JPEG, say).
    """
    size = len(data) if size is None else size
    if not size:
        return "empty file"
    if size > max_bytes:
        return f"file is {size // (1024 * 1024)} MB, over the {max_bytes // (1024 * 1024)} MB limit"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as image:
                image_format, (width, height) = image.format, image.size
                image.verify()
    except PILImage.UnidentifiedImageError:
        return NOT_AN_IMAGE
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        return TOO_LARGE
    except Exception as error:  # Pillow raises many types for bad data; each one is a rejection reason.
        return f"damaged image data: {error}"
    if image_format not in formats:
        return f"unsupported image format {image_format}; send JPEG or PNG"
    if width * height > max_pixels:
        return f"image is {width}x{height}, larger than we accept"
    return None


class IdempotencyConflict(Exception):
    """The Idempotency-Key already names a batch of other files: answering with that batch would drop
    these files without a word."""

    def __init__(self, batch: Batch):
        super().__init__(f"Idempotency-Key already used for batch {batch.id}, which holds other files; "
                         "send new files with a new key")
        self.batch = batch


def create_batch(hospital: Hospital, uploads: Iterable[Upload], idempotency_key: str | None = None,
                 actor: str | None = None,
                 references: dict[str, tuple[str | None, str | None]] | None = None) -> tuple[Batch, bool]:
    """Create the batch and its images; returns (batch, created). A repeated idempotency key with the same
    files (names and contents, in order) returns the batch made the first time, and creates nothing; with
    other files it raises IdempotencyConflict. Uploads are consumed one at a time, so a batch of thousands
    of files never sits in memory at once. references are the hospital's (patient, lesion) codes by file
    name (web/references.py)."""
    references = references or {}
    if idempotency_key:
        existing = _batch_for_key(hospital.id, idempotency_key)
        if existing:
            return _replay(existing, [(upload.filename, upload.digest) for upload in uploads]), False
    config = current_app.config
    store = ImageStore(config["STORAGE_DIR"])
    max_bytes = config["MAX_FILE_MB"] * 1024 * 1024
    batch = Batch(hospital_id=hospital.id, idempotency_key=idempotency_key, image_count=0)
    db.session.add(batch)
    sent = []
    for upload in uploads:
        batch.image_count += 1
        reason = check_image(upload.data, max_bytes, upload.size, formats=config["IMAGE_FORMATS"],
                             max_pixels=config["MAX_IMAGE_PIXELS"])
        image = Image(batch=batch, hospital_id=hospital.id, filename=upload.filename, size_bytes=upload.byte_count)
        image.patient_ref, image.lesion_ref = references.get(upload.filename, (None, None))
        if reason:
            image.sha256 = upload.digest
            image.status, image.rejection_reason = ImageStatus.REJECTED, reason
        else:
            image.sha256, image.storage_path = store.put(upload.data)
        sent.append((image.filename, image.sha256))
        db.session.add(image)
    try:
        db.session.flush()
        AuditEvent.record(actor or f"hospital:{hospital.id}", "batch.submitted", f"batch:{batch.id}",
                          images=batch.image_count, idempotency_key=idempotency_key)
        db.session.commit()
    except IntegrityError:
        # Two uploads with the same key raced; the first one wins and this one becomes a replay.
        db.session.rollback()
        existing = _batch_for_key(hospital.id, idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return _replay(existing, sent), False
    queued = [image.id for image in batch.images if image.status == ImageStatus.QUEUED]
    if queued:
        try:
            send_classify(current_app, queued)
        except Exception:  # the rows are safe; the requeue schedule sends them once the broker is back
            log.exception("could not queue batch %s; it will be requeued", batch.id)
    else:
        batch.finish_if_complete()
        db.session.commit()
    return batch, True


def _batch_for_key(hospital_id: int, key: str) -> Batch | None:
    return db.session.scalar(db.select(Batch).where(Batch.hospital_id == hospital_id, Batch.idempotency_key == key))


def _replay(batch: Batch, sent: list[tuple[str, str]]) -> Batch:
    """The batch an idempotency key already made, if these are its files (name and SHA-256, in order)."""
    stored = db.session.execute(
        db.select(Image.filename, Image.sha256).where(Image.batch_id == batch.id).order_by(Image.id)).all()
    if [tuple(row) for row in stored] != sent:
        raise IdempotencyConflict(batch)
    return batch
