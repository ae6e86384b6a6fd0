"""Hostile uploads, each answered with a clear 4xx or a per-file rejection in plain words, never a 5xx, and
never a worker crash: every accepted file then goes through the real inference task, and ends classified or
rejected with its reason, none failed. Property-based mutations of real JPEG/PNG bytes: tests/web/test_fuzz.py."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image as PILImage

from models import Batch, Image, db
from tests.conftest import dataset_images
from tests.worker.test_inference import _run_task
from web import ingest
from worker.classifier import images as decoder

CLEAR_WORDS = ("object at 0x", "Traceback", "<_io")


def _save(image: PILImage.Image, image_format: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=image_format, **options)
    return out.getvalue()


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("lesion.jpg", b"x" * 100)
    return out.getvalue()


def _hostile_files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, how it must end: done, rejected, or either for damage a decoder may survive)."""
    jpeg = dataset_images("melanoma", 1)[0].read_bytes()
    picture = PILImage.open(io.BytesIO(jpeg)).convert("RGB")
    png = _save(picture, "PNG")
    corrupt = bytearray(jpeg)
    corrupt[len(jpeg) // 2: len(jpeg) // 2 + 400] = bytes(range(256)) + bytes(144)
    gps = PILImage.Exif()
    gps[0x8825] = {1: "N", 2: (48.0, 12.0, 30.0), 3: "E", 4: (16.0, 22.0, 10.0)}  # GPSInfo: Vienna
    gps[0x010E] = "x" * 60_000  # ImageDescription: a huge EXIF block
    grey16 = PILImage.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    return {
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "rejected"),
        "corrupt-middle.jpg": (bytes(corrupt), "either"),
        "truncated.png": (png[: len(png) // 2], "rejected"),
        "gif.jpg": (_save(picture, "GIF"), "rejected"),
        "webp.jpg": (_save(picture, "WEBP"), "rejected"),
        "tiff.jpg": (_save(picture, "TIFF"), "rejected"),
        "svg.jpg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "rejected"),
        "html.jpg": (b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", "rejected"),
        "pdf.jpg": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF", "rejected"),
        "zip.jpg": (_zip(), "rejected"),
        "bomb-over-our-limit.png": (_save(PILImage.new("1", (10_000, 9_000)), "PNG"), "rejected"),
        "bomb-over-pillows-limit.png": (_save(PILImage.new("1", (14_000, 14_000)), "PNG"), "rejected"),
        "empty.jpg": (b"", "rejected"),
        "one-pixel.png": (_save(PILImage.new("RGB", (1, 1), (120, 60, 40)), "PNG"), "done"),
        "grey-16-bit.png": (_save(grey16, "PNG"), "done"),
        "palette.png": (_save(picture.convert("P"), "PNG"), "done"),
        "cmyk.jpg": (_save(picture.convert("CMYK"), "JPEG"), "done"),
        "huge-exif-with-gps.jpg": (_save(picture, "JPEG", exif=gps), "done"),
    }


@pytest.fixture(scope="module")
def hostile_files():
    return _hostile_files()


def _upload(client, key, files, **kwargs):
    return client.post("/api/v1/batches", headers={"X-API-Key": key}, content_type="multipart/form-data",
                       data={"files": [(io.BytesIO(content), name) for name, content in files]}, **kwargs)


def test_the_web_and_the_worker_say_unreadable_in_the_same_words():
    assert ingest.NOT_AN_IMAGE == decoder.NOT_AN_IMAGE and ingest.TOO_LARGE == decoder.TOO_LARGE


def test_every_hostile_file_ends_classified_or_rejected_in_plain_words(app, client, hospital, hostile_files):
    _, key = hospital
    response = _upload(client, key, [(name, content) for name, (content, _) in hostile_files.items()])
    assert response.status_code == 202, response.get_data(as_text=True)
    batch_id = response.get_json()["id"]
    images = db.session.scalars(db.select(Image).where(Image.batch_id == batch_id)).all()
    _run_task(app, [image.id for image in images if image.status == "queued"])  # the worker's real task
    db.session.expire_all()
    ended = {image.filename: image for image in db.session.scalars(db.select(Image).where(Image.batch_id == batch_id))}
    for name, (_, expected) in hostile_files.items():
        image = ended[name]
        assert image.status in ({"done", "rejected"} if expected == "either" else {expected}), (name, image.status,
                                                                                                 image.rejection_reason)
        if image.status == "rejected":
            assert image.rejection_reason and not any(word in image.rejection_reason for word in CLEAR_WORDS), (
                name, image.rejection_reason)
    assert "decompression bomb" in ended["bomb-over-pillows-limit.png"].rejection_reason
    assert "unsupported image format GIF" in ended["gif.jpg"].rejection_reason
    assert db.session.get(Batch, batch_id).status == "done"


def test_the_decoder_rejects_whatever_the_web_rejects(app, hostile_files):
    """One rule: the web's header check is the cheap half of the decoder's, never looser."""
    config = app.config
    for name, (content, _) in hostile_files.items():
        web_reason = ingest.check_image(content, 50 * 1024 * 1024, formats=config["IMAGE_FORMATS"],
                                        max_pixels=config["MAX_IMAGE_PIXELS"])
        try:
            decoder.decode_image(content, 64, config["IMAGE_FORMATS"], config["MAX_IMAGE_PIXELS"])
        except decoder.UnreadableImage:
            continue
        assert web_reason is None, (name, web_reason)


@pytest.mark.parametrize("name, stored_as", [
    ("../../etc/passwd.jpg", "../../etc/passwd.jpg"),
    ("/home/clinic/patients/Jane Doe/lesion.jpg", "/home/clinic/patients/Jane Doe/lesion.jpg"),
    ("nul\x00in\x00name.jpg", "nulinname.jpg"),
    ("control\x07\x1b[31m.jpg", "control[31m.jpg"),
    ("\u00e9\u00e8\u4e2d\u6587\U0001f600.jpg", "\u00e9\u00e8\u4e2d\u6587\U0001f600.jpg"),
    ("a" * 300 + ".jpg", "a" * 300 + ".jpg"),
    ("\x00\x01\x02", "file-1"),
])
def test_odd_file_names_are_kept_as_references_and_never_reach_the_file_system(app, client, hospital, name,
                                                                               stored_as):
    _, key = hospital
    jpeg = dataset_images("nevus", 1)[0].read_bytes()
    response = _upload(client, key, [(name, jpeg)])
    assert response.status_code == 202, response.get_data(as_text=True)
    image = db.session.scalars(db.select(Image).where(Image.batch_id == response.get_json()["id"])).one()
    assert image.filename == stored_as and image.status == "queued"
    # Stored by content, under the storage folder, whatever the name said.
    assert image.storage_path == f"{image.sha256[:2]}/{image.sha256}" or image.sha256 in image.storage_path
    assert ".." not in image.storage_path and not image.storage_path.startswith("/")


def test_duplicate_names_in_one_batch_are_two_images(app, client, hospital):
    _, key = hospital
    first, second = dataset_images("nevus", 2)
    response = _upload(client, key, [("same.jpg", first.read_bytes()), ("same.jpg", second.read_bytes())])
    assert response.status_code == 202 and response.get_json()["image_count"] == 2


@pytest.mark.parametrize("body, content_type", [
    (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n\r\nabc", "boundary=b"),
    (b"no boundary anywhere in this body", "boundary=b"),
    (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n\r\nabc\r\n--b--\r\n", ""),
    (b"\xff\xfe\x00garbage" * 100, "boundary=" + "x" * 2000),
])
def test_malformed_multipart_bodies_are_a_400_and_store_nothing(app, client, hospital, body, content_type):
    _, key = hospital
    response = client.post("/api/v1/batches", data=body, headers={"X-API-Key": key},
                           content_type=f"multipart/form-data; {content_type}".rstrip("; "))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]
    assert db.session.scalar(db.select(db.func.count(Batch.id))) == 0


def test_more_files_than_the_batch_limit_is_a_413_that_stores_nothing(app, client, hospital):
    _, key = hospital
    app.config["MAX_FILES_PER_BATCH"] = 3
    jpeg = dataset_images("nevus", 1)[0].read_bytes()
    response = _upload(client, key, [(f"{index}.jpg", jpeg) for index in range(4)])
    assert response.status_code == 413 and "at most 3" in response.get_json()["error"]
    assert db.session.scalar(db.select(db.func.count(Batch.id))) == 0


def test_images_served_back_carry_no_exif_gps_or_text(app, client, hospital, hostile_files):
    """The only image served back today is an alert's heatmap: drawn from pixels, it keeps none of the
    upload's metadata (here a GPS position and 60 kB of EXIF)."""
    import worker.tasks  # noqa: F401
    from tests.worker.test_inference import champion_threshold_zero
    from web.queue import EXPLAIN_ALERT

    _, key = hospital
    content, _ = hostile_files["huge-exif-with-gps.jpg"]
    assert PILImage.open(io.BytesIO(content)).getexif().get_ifd(0x8825), "the upload must carry GPS to begin with"
    batch_id = _upload(client, key, [("gps.jpg", content)]).get_json()["id"]
    image = db.session.scalars(db.select(Image).where(Image.batch_id == batch_id)).one()
    champion_threshold_zero(app, [image.id])
    alert_id = image.predictions[0].alert.id
    app.extensions["celery"].tasks[EXPLAIN_ALERT].apply(args=[alert_id]).get()
    db.session.expire_all()
    served = client.get(f"/api/v1/alerts/{alert_id}/heatmap", headers={"X-API-Key": key})
    assert served.status_code == 200 and served.mimetype == "image/png"
    with PILImage.open(io.BytesIO(served.data)) as heatmap:
        assert not heatmap.getexif() and not heatmap.info.get("exif")
        assert not {name for name in heatmap.info if name not in ("dpi", "gamma", "srgb")}, heatmap.info
    assert b"Exif" not in served.data and b"eXIf" not in served.data and b"tEXt" not in served.data
