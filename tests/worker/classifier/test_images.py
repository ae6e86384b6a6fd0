"""Decoding stored bytes into the arrays the CNN is fed."""

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.conftest import dataset_images, make_png
from worker.classifier.images import UnreadableImage, decode_image


def test_decode_image_gives_the_input_size_whatever_the_source_size():
    for size in ((640, 480), (33, 200), (180, 180)):
        array = decode_image(make_png(*size), 96)
        assert array.shape == (96, 96, 3) and array.dtype == np.uint8
    with pytest.raises(UnreadableImage, match="empty"):
        decode_image(b"", 96)
    with pytest.raises(UnreadableImage, match="not an image we can read"):
        decode_image(b"plain text", 96)


def test_decode_images_keeps_the_order_and_says_why_each_failure_failed(tmp_path):
    from worker.classifier.images import decode_images

    names = [f"{index}.png" for index in range(12)]
    for index, name in enumerate(names):
        (tmp_path / name).write_bytes(make_png(40 + index, 30, (10 * index, 100, 200)))
    (tmp_path / "5.png").write_bytes(b"not a picture")
    names.insert(7, "missing.png")
    decoded = decode_images(lambda name: (tmp_path / name).read_bytes(), names, 16)
    assert len(decoded) == 13
    assert isinstance(decoded[5], UnreadableImage) and isinstance(decoded[7], FileNotFoundError)
    for position, name in enumerate(names):
        if position not in (5, 7):
            assert decoded[position][0, 0, 0] == 10 * int(name.split(".")[0]), name


def test_a_16_bit_grey_png_keeps_its_levels_instead_of_clipping_to_white():
    levels = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)
    png = io.BytesIO()
    PILImage.fromarray(levels).save(png, format="PNG")
    assert PILImage.open(io.BytesIO(png.getvalue())).mode.startswith("I")
    decoded = decode_image(png.getvalue(), 48)
    expected = np.rint(levels / 257.0)
    np.testing.assert_allclose(decoded[..., 0], expected, atol=1)
    np.testing.assert_array_equal(decoded[..., 0], decoded[..., 2])


def test_a_camera_sized_jpeg_decodes_at_reduced_scale_to_nearly_the_full_decode():
    lesion = PILImage.open(dataset_images("melanoma", 1)[0]).convert("RGB")
    for size, mode in (((2400, 1800), "RGB"), ((1600, 1200), "L")):
        photograph = io.BytesIO()
        lesion.resize(size, PILImage.Resampling.BICUBIC).convert(mode).save(photograph, format="JPEG", quality=92)
        full = PILImage.open(io.BytesIO(photograph.getvalue())).convert("RGB")
        full = np.asarray(full.resize((192, 192), PILImage.Resampling.BILINEAR, reducing_gap=None)).astype(int)
        fast = decode_image(photograph.getvalue(), 192)
        assert fast.shape == (192, 192, 3)
        assert np.abs(fast - full).mean() < 1.0 and np.abs(fast - full).max() <= 8, mode
        assert not np.array_equal(fast, full)  # decoded at 1/8 scale, not in full and then shrunk


def test_decoding_applies_the_readable_image_rule_it_is_given():
    gif = io.BytesIO()
    PILImage.new("RGB", (64, 48)).save(gif, format="GIF")
    assert decode_image(gif.getvalue(), 32).shape == (32, 32, 3)  # no rule given: what Pillow reads
    with pytest.raises(UnreadableImage, match="unsupported image format GIF"):
        decode_image(gif.getvalue(), 32, formats=frozenset({"JPEG", "PNG"}))
    with pytest.raises(UnreadableImage, match="image is 64x48, larger than we accept"):
        decode_image(make_png(64, 48), 32, max_pixels=64 * 48 - 1)
    assert decode_image(make_png(64, 48), 32, formats=frozenset({"PNG"}), max_pixels=64 * 48).shape == (32, 32, 3)
