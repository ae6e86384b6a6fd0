"""The dataset audit finds planted duplicates, near duplicates, label conflicts, leaks and source shortcuts."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.conftest import ROOT
from worker.classifier.audit import audit, source_of


def _lesion(seed: int, size: int = 120) -> Image.Image:
    """A synthetic 'lesion': random smooth blobs, different for each seed."""
    rng = np.random.default_rng(seed)
    noise = rng.random((12, 12, 3)) * 255
    image = Image.fromarray(noise.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    return image.filter(ImageFilter.GaussianBlur(2))


def _save(image: Image.Image, path, quality: int = 92) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=quality) if path.suffix == ".jpg" else image.save(path)


def _dataset(root):
    for index in range(6):
        _save(_lesion(index), root / "melanoma" / f"ISIC_00001{index:02d}.jpg")
        _save(_lesion(100 + index), root / "nevus" / f"ISIC_00251{index:02d}.jpg")
    # An exact copy within a class, and the same bytes filed under two classes.
    (root / "melanoma" / "copy.jpg").write_bytes((root / "melanoma" / "ISIC_0000100.jpg").read_bytes())
    (root / "nevus" / "conflict.jpg").write_bytes((root / "melanoma" / "ISIC_0000101.jpg").read_bytes())
    # A near duplicate: the same picture resized, recompressed and brightened.
    near = _lesion(2).resize((180, 180)).point(lambda value: min(255, value + 12))
    _save(near, root / "melanoma" / "near.jpg", quality=60)
    (root / "nevus" / "broken.jpg").write_bytes(b"not an image")


def test_audit_collapses_duplicates_and_excludes_conflicts(tmp_path):
    _dataset(tmp_path)
    kept, report = audit(tmp_path, ("melanoma", "nevus"))
    kept_names = {image.path.rsplit("/", 1)[1] for image in kept}
    assert report.images == 15 and len(report.unreadable) == 1
    assert [sorted(c["labels"]) for c in report.label_conflicts] == [["melanoma", "nevus"]]
    assert "ISIC_0000101.jpg" not in kept_names and "conflict.jpg" not in kept_names
    assert any(len(group) == 2 and any("copy.jpg" in p for p in group) for group in report.exact_duplicate_groups)
    assert any(any("near.jpg" in p for p in group) for group in report.near_duplicate_groups)
    assert len(kept) == 15 - 2 - 1 - 1 == report.kept
    assert len({image.sha256 for image in kept}) == len(kept)


def test_audit_finds_images_shared_with_another_folder(tmp_path):
    _dataset(tmp_path / "train")
    _save(_lesion(3), tmp_path / "test" / "melanoma" / "same.png")
    _save(_lesion(103).resize((90, 90)), tmp_path / "test" / "nevus" / "smaller.jpg")
    _save(_lesion(999), tmp_path / "test" / "nevus" / "new.jpg")
    _, report = audit(tmp_path / "train", ("melanoma", "nevus"), against=tmp_path / "test")
    leaked = {leak["path"].rsplit("/", 1)[1]: leak["kind"] for leak in report.leaks}
    assert leaked == {"same.png": "near", "smaller.jpg": "near"}


def test_audit_reports_labels_per_source_and_warns_of_a_shortcut(tmp_path):
    _dataset(tmp_path)
    _, report = audit(tmp_path, ("melanoma", "nevus"))
    assert report.sources["ISIC archive"] == {"melanoma": 5}  # one of the six is a label conflict
    assert report.sources["HAM10000"] == {"nevus": 6}
    assert any(warning.startswith("nevus: 100% from HAM10000") for warning in report.shortcut_warnings)
    assert source_of("ISIC_0024306.jpg") == "HAM10000" and source_of("ISIC_0000001.jpg") == "ISIC archive"
    assert source_of("photo.png") == "unknown"


def test_audit_command_prints_a_table_and_writes_json(tmp_path):
    _dataset(tmp_path / "data")
    out = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "web.cli", "audit", str(tmp_path / "data"), "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "label conflicts" in result.stdout and "WARNING" in result.stdout
    assert json.loads(out.read_text())["kept"] == 11
    assert "tensorflow" not in result.stderr.lower()


def test_png_and_jpeg_of_one_picture_are_near_duplicates(tmp_path):
    picture = _lesion(7)
    _save(picture, tmp_path / "nevus" / "a.png")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=50)
    (tmp_path / "nevus" / "b.jpg").write_bytes(buffer.getvalue())
    kept, report = audit(tmp_path, ("nevus",))
    assert len(kept) == 1 and report.collapsed == 1


def _second_source(root):
    """A HAM10000-style folder: a metadata.csv with source and lesion_id, two pictures of one lesion, only
    two of the classes, and one picture that is also in the first folder."""
    rows = ["image_id,lesion_id,diagnosis,source"]
    for index in range(4):
        _save(_lesion(300 + index), root / "melanoma" / f"ISIC_00300{index:02d}.jpg")
        rows.append(f"ISIC_00300{index:02d},HAM_{index // 2:07d},melanoma,vienna-modern")
    _save(_lesion(400), root / "nevus" / "ISIC_0040000.jpg")
    rows.append("ISIC_0040000,HAM_0000009,nevus,rosendahl")
    (root / "nevus" / "ISIC_0040001.jpg").write_bytes((root.parent / "data" / "nevus" / "ISIC_0025100.jpg")
                                                      .read_bytes())
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")


def test_several_folders_are_audited_together_with_sources_and_lesions_from_metadata(tmp_path):
    _dataset(tmp_path / "data")
    _second_source(tmp_path / "ham")
    kept, report = audit([tmp_path / "data", tmp_path / "ham"], ("melanoma", "nevus"))
    by_name = {Path(image.path).name: image for image in kept}
    assert by_name["ISIC_0030000.jpg"].source == "vienna-modern" and by_name["ISIC_0040000.jpg"].source == "rosendahl"
    assert by_name["ISIC_0030000.jpg"].lesion == by_name["ISIC_0030001.jpg"].lesion == "HAM_0000000"
    assert by_name["ISIC_0000100.jpg"].source == "ISIC archive" and by_name["ISIC_0000100.jpg"].lesion == ""
    # The copy across folders is one picture: found and collapsed like a copy within one.
    assert any({"ISIC_0025100.jpg", "ISIC_0040001.jpg"} == {Path(p).name for p in group}
               for group in report.exact_duplicate_groups)
    assert report.sources["vienna-modern"] == {"melanoma": 4} and report.sources["rosendahl"] == {"nevus": 1}
    assert str(tmp_path / "ham") in report.data_dir
    with pytest.raises(ValueError, match="no folder for classes"):
        audit([tmp_path / "data", tmp_path / "ham"], ("melanoma", "nevus", "dermatofibroma"))


def test_audit_command_takes_several_folders(tmp_path):
    _dataset(tmp_path / "data")
    _second_source(tmp_path / "ham")
    out = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "web.cli", "audit", str(tmp_path / "data"), str(tmp_path / "ham"),
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "vienna-modern" in result.stdout and "rosendahl" in result.stdout
    assert json.loads(out.read_text())["kept"] == 11 + 5
