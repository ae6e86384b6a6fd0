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

from models import Hospital, Image, db
from models.diagnosis import confirmed_pictures, held_back
from web.storage import ImageStore
from worker.classifier.audit import METADATA
from worker.classifier.choices import CLASS_NAMES

SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png"}


@dataclass
class Snapshot:
    folder: Path
    training: list[dict] = field(default_factory=list)  # {"sha256", "label", "source"} a row
    held_back: list[dict] = field(default_factory=list)  # the same, with "image_id" and "storage_path"

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
    """(image, label, source) for every confirmed picture whose diagnosis is a class: (training, held back)."""
    names = dict(db.session.execute(db.select(Hospital.id, Hospital.name)).all())
    training, back = [], []
    for image, label in confirmed_pictures():
        if label in CLASS_NAMES:
            side = back if held_back(image.sha256, holdback_percent) else training
            side.append((image, label, f"hospital:{names[image.hospital_id]}"))
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
    snapshot.held_back = [{"sha256": image.sha256, "label": label, "source": source, "image_id": image.id,
                           "storage_path": image.storage_path} for image, label, source in back]
    return snapshot
