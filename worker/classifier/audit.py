"""Dataset audit: exact and near duplicates, one image under two labels, leaks between two folders, and
whether an image's source predicts its label (a shortcut the CNN would learn instead of the lesion).

Pure numpy and Pillow, so `melanoma audit` runs without TensorFlow.
"""

import csv
import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
# Hamming distance (of 256 bits) at or under which two perceptual hashes count as the same picture.
# Measured on the ISIC Train folder: pairs at 2-36 bits were the same lesion (re-shot, shifted, recoloured),
# the closest different lesions sat at 42 and above.
HASH_BITS = 256
NEAR_DUPLICATE_BITS = 38
HAM10000, ARCHIVE = "HAM10000", "ISIC archive"
# HAM10000 images carry ISIC identifiers in this range; lower ones come from the older ISIC archive.
HAM10000_IDS = (24306, 34320)
ISIC_ID = re.compile(r"ISIC_(\d{7})")
# A class drawn this much more from one source than the collection as a whole is a shortcut risk.
SHORTCUT_MARGIN = 0.25


@dataclass
class AuditedImage:
    path: str
    label: str
    sha256: str
    phash: str
    source: str
    group: int = -1
    # The lesion the picture shows (metadata.csv's lesion_id); "" where unknown, each image its own lesion.
    lesion: str = ""


@dataclass
class AuditReport:
    data_dir: str
    images: int
    classes: dict[str, int]
    exact_duplicate_groups: list[list[str]] = field(default_factory=list)
    near_duplicate_groups: list[list[str]] = field(default_factory=list)
    label_conflicts: list[dict] = field(default_factory=list)
    unreadable: list[dict] = field(default_factory=list)
    kept: int = 0
    excluded: int = 0
    collapsed: int = 0
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    shortcut_warnings: list[str] = field(default_factory=list)
    leaks: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def source_of(path: str) -> str:
    """The sub-collection an image comes from, read from its ISIC identifier; 'unknown' otherwise."""
    match = ISIC_ID.search(Path(path).name)
    if not match:
        return "unknown"
    low, high = HAM10000_IDS
    return HAM10000 if low <= int(match.group(1)) <= high else ARCHIVE


def _dct_matrix(size: int) -> np.ndarray:
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2.0 / size)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT64 = _dct_matrix(64)


def perceptual_hash(image: Image.Image) -> str:
    """256-bit DCT hash (hex): robust to resizing, recompression and colour changes, not to large crops."""
    grey = np.asarray(image.convert("L").resize((64, 64), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT64 @ grey @ _DCT64.T)[:16, :16].flatten()
    bits = low > np.median(low[1:])
    return np.packbits(bits).tobytes().hex()


def hamming_matrix(hashes_a: list[str], hashes_b: list[str]) -> np.ndarray:
    """Bits that differ between every hash of A and every hash of B."""
    def words(hashes):
        return np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes), dtype=">u8").reshape(len(hashes), -1)

    a, b = words(hashes_a).astype(np.uint64), words(hashes_b).astype(np.uint64)
    return sum(np.bitwise_count(a[:, None, k] ^ b[None, :, k]) for k in range(a.shape[1])).astype(np.int32)


DataDirs = str | Path | Sequence[str | Path]
METADATA = "metadata.csv"


def data_folders(data_dirs: DataDirs) -> list[Path]:
    """One folder or several, each holding one sub-folder per class."""
    folders = [Path(data_dirs)] if isinstance(data_dirs, str | Path) else [Path(d) for d in data_dirs]
    if not folders:
        raise ValueError("no data folder given; pass one or more folders holding one sub-folder per class")
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder; pass a folder holding one sub-folder per class")
    return folders


def read_metadata(folder: Path) -> dict[str, dict[str, str]]:
    """metadata.csv beside the class folders (HAM10000's layout), by image_id (the file name without its
    extension): each image's source and lesion_id. Empty where the folder has none."""
    path = folder / METADATA
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8-sig") as rows:
        reader = csv.DictReader(rows)
        if "image_id" not in (reader.fieldnames or []):
            raise ValueError(f"{path} has no image_id column; it names each image by its file name without extension")
        return {row["image_id"]: row for row in reader}


def scan(data_dirs: DataDirs, class_names: tuple[str, ...] | None = None,
         every_class: bool = True) -> tuple[list[AuditedImage], list[dict]]:
    """Hash every image under each DATA_DIR/<class>/; returns the images and the files that would not open.

    An image's source and lesion come from the folder's metadata.csv where it has one (columns source and
    lesion_id), otherwise from the ISIC identifier rule (source) and the image itself (its own lesion). A
    folder may lack a class another folder has; a class that no folder has is an error where every_class (to
    train, every class needs images; a hospital's collection to be scored on may lack the rare ones)."""
    folders = data_folders(data_dirs)
    names = class_names or tuple(sorted({p.name for folder in folders for p in folder.iterdir() if p.is_dir()}))
    missing = [name for name in names if not any((folder / name).is_dir() for folder in folders)]
    if missing and every_class:
        where = folders[0] if len(folders) == 1 else ", ".join(map(str, folders))
        raise ValueError(f"{where} has no folder for classes {missing}; expected one folder per class")
    images, unreadable = [], []
    for folder in folders:
        metadata = read_metadata(folder)
        for label in names:
            for path in sorted((folder / label).rglob("*")) if (folder / label).is_dir() else []:
                if not (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
                    continue
                data = path.read_bytes()
                try:
                    with Image.open(path) as image:
                        phash = perceptual_hash(image)
                except Exception as error:  # Pillow raises many types for bad data; each one is reported
                    unreadable.append({"path": str(path), "reason": str(error)})
                    continue
                row = metadata.get(path.stem, {})
                images.append(AuditedImage(str(path), label, hashlib.sha256(data).hexdigest(), phash,
                                           row.get("source") or source_of(path.name), lesion=row.get("lesion_id", "")))
    return images, unreadable


def _group(images: list[AuditedImage]) -> None:
    """Union-find over exact (same bytes) and near (close perceptual hash) duplicates."""
    parent = list(range(len(images)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    first_by_sha: dict[str, int] = {}
    for index, image in enumerate(images):
        if image.sha256 in first_by_sha:
            union(index, first_by_sha[image.sha256])
        first_by_sha.setdefault(image.sha256, index)
    if images:
        distances = hamming_matrix([i.phash for i in images], [i.phash for i in images])
        rows, columns = np.nonzero(np.triu(distances <= NEAR_DUPLICATE_BITS, k=1))
        for i, j in zip(rows.tolist(), columns.tolist(), strict=True):
            union(i, j)
    for index, image in enumerate(images):
        image.group = find(index)


def audit(data_dirs: DataDirs, class_names: tuple[str, ...] | None = None,
          against: str | Path | None = None, every_class: bool = True) -> tuple[list[AuditedImage], AuditReport]:
    """Audit a class-folder dataset; returns one kept image per clean duplicate group, and the report.

    Groups whose members carry two labels are excluded whole; other groups keep their first member, so
    no picture can sit on both sides of a split later.
    """
    images, unreadable = scan(data_dirs, class_names, every_class)
    _group(images)
    groups: dict[int, list[AuditedImage]] = defaultdict(list)
    for image in images:
        groups[image.group].append(image)
    report = AuditReport(data_dir=", ".join(map(str, data_folders(data_dirs))), images=len(images),
                         classes=dict(Counter(image.label for image in images)), unreadable=unreadable)
    kept: list[AuditedImage] = []
    for members in groups.values():
        labels = sorted({member.label for member in members})
        if len(members) > 1:
            same_bytes = len({member.sha256 for member in members}) == 1
            target = report.exact_duplicate_groups if same_bytes else report.near_duplicate_groups
            target.append([member.path for member in members])
        if len(labels) > 1:
            report.label_conflicts.append({"labels": labels, "paths": [member.path for member in members]})
            report.excluded += len(members)
            continue
        report.collapsed += len(members) - 1
        kept.append(members[0])
    kept.sort(key=lambda image: image.path)
    report.kept = len(kept)
    report.sources, report.shortcut_warnings = source_report(kept)
    if against is not None:
        report.leaks = find_leaks(images, scan(against, None)[0])
    return kept, report


def source_report(images: list[AuditedImage]) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Label counts per source, and a warning for each class whose source mix departs from the whole."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for image in images:
        table[image.source][image.label] += 1
    sources = {source: dict(sorted(labels.items())) for source, labels in sorted(table.items())}
    warnings = []
    if len(sources) > 1 and images:
        overall = Counter(image.source for image in images)
        by_label: dict[str, Counter] = defaultdict(Counter)
        for image in images:
            by_label[image.label][image.source] += 1
        for label, counts in sorted(by_label.items()):
            total = sum(counts.values())
            for source, count in counts.items():
                share, base = count / total, overall[source] / len(images)
                if share - base >= SHORTCUT_MARGIN:
                    warnings.append(f"{label}: {share:.0%} from {source} against {base:.0%} overall; "
                                    f"the source predicts this label (shortcut risk)")
    return sources, warnings


def find_leaks(train: list[AuditedImage], other: list[AuditedImage]) -> list[dict]:
    """Images of OTHER that are the same picture (exact or near) as one in TRAIN."""
    if not train or not other:
        return []
    distances = hamming_matrix([i.phash for i in other], [i.phash for i in train])
    by_sha = {image.sha256: image for image in train}
    leaks = []
    for index, image in enumerate(other):
        match = by_sha.get(image.sha256)
        kind = "exact"
        if match is None:
            nearest = int(distances[index].argmin())
            if distances[index, nearest] > NEAR_DUPLICATE_BITS:
                continue
            match, kind = train[nearest], "near"
        leaks.append({"path": image.path, "label": image.label, "matches": match.path,
                      "matched_label": match.label, "kind": kind})
    return leaks


def summary_table(report: AuditReport) -> str:
    lines = [f"Audit of {report.data_dir}",
             f"  images read             {report.images}",
             f"  unreadable              {len(report.unreadable)}",
             f"  exact duplicate groups  {len(report.exact_duplicate_groups)}",
             f"  near duplicate groups   {len(report.near_duplicate_groups)}",
             f"  label conflicts         {len(report.label_conflicts)} groups, {report.excluded} images excluded",
             f"  duplicates collapsed    {report.collapsed}",
             f"  kept for training       {report.kept}"]
    if report.leaks:
        lines.append(f"  leaks into other folder {len(report.leaks)}")
    if report.sources:
        labels = sorted(report.classes)
        lines.append("")
        lines.append("  " + "source".ljust(14) + "".join(label[:10].rjust(11) for label in labels))
        for source, counts in report.sources.items():
            lines.append("  " + source.ljust(14) + "".join(str(counts.get(label, 0)).rjust(11) for label in labels))
    for warning in report.shortcut_warnings:
        lines.append(f"  WARNING {warning}")
    return "\n".join(lines)
