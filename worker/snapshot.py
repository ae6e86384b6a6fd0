"""The confirmed images retraining learns from, taken out of the database as a class-folder dataset beside
the base folders: each image's newest confirmed diagnosis (one of the nine classes; `other` trains nothing),
its source the hospital. A fixed share of every hospital's confirmed images is held back, chosen by the image's
hash, so an image is on the same side in every retraining: that share is the hospital's evaluation set, and
never enters training."""

import csv
import hashlib
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image as PILImage

from models import ConfirmedDiagnosis, Hospital, Image, db
from models.batch import ImageStatus
from web.storage import ImageStore
from worker.classifier.audit import METADATA
from worker.classifier.choices import CLASS_NAMES

SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png"}


def held_back(sha256: str, percent: int) -> bool:
    """The same answer for the same picture, in every hospital and every retraining."""
    return int(sha256[:8], 16) % 100 < percent


@dataclass
class Snapshot:
    folder: Path
    training: list[dict] = field(default_factory=list)  # {"sha256", "label", "source"} a row
    held_back: list[dict] = field(default_factory=list)  # the same, with "storage_path": the gate reads them

    @property
    def sha256(self) -> str:
        """A fingerprint of what was trained on and held back: hashes, labels and sources, sorted."""
        rows = sorted((row["sha256"], row["label"], row["source"], side)
                      for side, rows in (("train", self.training), ("held_back", self.held_back)) for row in rows)
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()

    def summary(self) -> dict:
        return {"sha256": self.sha256, "confirmed_images": len(self.training), "held_back": len(self.held_back),
                "folder": str(self.folder)}


def confirmed_images(holdback_percent: int) -> tuple[list[tuple[Image, str, str]], list[tuple[Image, str, str]]]:
    """(image, label, source) for every image whose newest confirmed diagnosis is a class: (training, held back).
    A picture sent several times is one row (its first image)."""
    counting = ConfirmedDiagnosis.counting().subquery()
    rows = db.session.execute(
        db.select(Image, counting.c.diagnosis, Hospital.name)
        .join(counting, counting.c.image_id == Image.id).join(Hospital, Hospital.id == Image.hospital_id)
        .where(Image.status != ImageStatus.REJECTED, counting.c.diagnosis.in_(CLASS_NAMES))
        .order_by(Image.id)).all()
    training, back, seen = [], [], set()
    for image, label, hospital in rows:
        if image.sha256 in seen:
            continue
        seen.add(image.sha256)
        (back if held_back(image.sha256, holdback_percent) else training).append((image, label, f"hospital:{hospital}"))
    return training, back


def export(folder: Path, storage_dir: str, holdback_percent: int) -> Snapshot:
    """Write the training side as FOLDER/<class>/<sha256>.<ext> with a metadata.csv (image_id, lesion_id,
    source), the layout `melanoma train` reads beside the base folders."""
    training, back = confirmed_images(holdback_percent)
    store = ImageStore(storage_dir)
    if folder.exists():
        shutil.rmtree(folder)
    for name in CLASS_NAMES:  # every class folder, so the folder is a dataset even with few labels
        (folder / name).mkdir(parents=True)
    snapshot = Snapshot(folder)
    metadata = io.StringIO()
    writer = csv.writer(metadata)
    writer.writerow(["image_id", "lesion_id", "source"])
    for image, label, source in training:
        data = store.read(image.storage_path)
        with PILImage.open(io.BytesIO(data)) as picture:
            suffix = SUFFIXES.get(picture.format, ".png")
        (folder / label / f"{image.sha256}{suffix}").write_bytes(data)
        writer.writerow([image.sha256, image.sha256, source])
        snapshot.training.append({"sha256": image.sha256, "label": label, "source": source})
    (folder / METADATA).write_text(metadata.getvalue())
    snapshot.held_back = [{"sha256": image.sha256, "label": label, "source": source,
                           "storage_path": image.storage_path} for image, label, source in back]
    return snapshot
