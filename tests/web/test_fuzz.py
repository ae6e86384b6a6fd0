"""Property-based: real JPEG and PNG bytes, mutated by Hypothesis (bytes overwritten, cut, inserted,
repeated), at the web's upload path and the workers' decoder. Whatever the bytes: the upload answers 202 with
each file queued or rejected in words, the decoder returns an image of the input size or says why not, and
it never accepts less than the web does. Derandomised, so CI runs the same examples every time."""

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from models import Image, db
from tests.conftest import dataset_images
from web.ingest import check_image
from worker.classifier.images import UnreadableImage, decode_image

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _seeds() -> list[bytes]:
    """Two small real dermoscopic pictures, as JPEG and as PNG (small, so each example is quick)."""
    seeds = []
    for path in dataset_images("melanoma", 1) + dataset_images("nevus", 1):
        picture = PILImage.open(path).convert("RGB").resize((48, 48))
        for image_format in ("JPEG", "PNG"):
            out = io.BytesIO()
            picture.save(out, format=image_format)
            seeds.append(out.getvalue())
    return seeds


SEEDS = _seeds()


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["overwrite", "cut", "insert", "repeat", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(chunk)] = chunk
        elif operation == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif operation == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 256))] * draw(st.integers(1, 8))
        else:
            del data[at:]
    return bytes(data)


def _web_verdict(app, data: bytes) -> str | None:
    return check_image(data, app.config["MAX_FILE_MB"] * 1024 * 1024, formats=app.config["IMAGE_FORMATS"],
                       max_pixels=app.config["MAX_IMAGE_PIXELS"])


@settings(FUZZ, max_examples=300)
@given(data=mutated_images())
def test_the_decoder_gives_an_image_or_a_reason_and_never_accepts_what_the_web_rejects(app, data):
    web_reason = _web_verdict(app, data)
    assert web_reason is None or isinstance(web_reason, str) and web_reason
    try:
        array = decode_image(data, 32, app.config["IMAGE_FORMATS"], app.config["MAX_IMAGE_PIXELS"])
    except UnreadableImage as reason:
        assert str(reason) and "object at 0x" not in str(reason)
        return
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8
    assert web_reason is None, f"the decoder read what the web refused: {web_reason}"


@settings(FUZZ, max_examples=25)
@given(data=mutated_images())
def test_an_upload_of_any_mutation_is_accepted_with_each_file_queued_or_rejected_in_words(client, hospital, data):
    _, key = hospital
    response = client.post("/api/v1/batches", headers={"X-API-Key": key}, content_type="multipart/form-data",
                           data={"files": [(io.BytesIO(data), "mutated.jpg"), (io.BytesIO(SEEDS[0]), "good.jpg")]})
    assert response.status_code == 202, response.get_data(as_text=True)
    images = {image.filename: image for image in db.session.scalars(
        db.select(Image).where(Image.batch_id == response.get_json()["id"]))}
    assert images["good.jpg"].status == "queued"
    mutated = images["mutated.jpg"]
    assert mutated.status == "queued" or mutated.status == "rejected" and "object at 0x" not in mutated.rejection_reason
