"""Quality warnings: sharpness, illumination and overexposure against the limits of the card."""

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageFilter

from tests.conftest import dataset_images
from web.config import DEFAULT_MODEL_DIR
from worker.classifier.artifacts import read_card
from worker.classifier.images import decode_image
from worker.classifier.quality import (
    Quality,
    QualityLimits,
    illumination,
    measure_quality,
    overexposure,
    quality_limits,
    quality_warning,
    sharpness,
)


def test_sharpness_is_the_laplacian_variance_of_the_grey_levels():
    flat = np.full((16, 16, 3), 120, dtype=np.uint8)
    assert sharpness(flat) == 0.0
    # A one-pixel checkerboard of 0 and 255: every inner Laplacian is +-4 * 255, so the variance is (4 * 255)^2.
    board = ((np.indices((16, 16)).sum(axis=0) % 2) * 255).astype(np.uint8)
    assert sharpness(np.repeat(board[..., None], 3, axis=2)) == pytest.approx((4 * 255) ** 2, rel=1e-4)
    images = np.stack([np.zeros((8, 8, 3), np.uint8)] * 2 + [np.repeat(board[:8, :8, None], 3, axis=2)])
    assert quality_limits(images)["sharpness_floor"] == pytest.approx(0.0)
    assert quality_warning(measure_quality(flat), QualityLimits()) is None


def _vignetted(image: np.ndarray) -> np.ndarray:
    """evaluate's vignetting perturbation, on a decoded array: the corners at 40 % of their brightness."""
    from worker.classifier.perturbations import PERTURBATIONS

    return np.asarray(PERTURBATIONS["vignetting"](PILImage.fromarray(image)))


def test_illumination_sees_a_darkened_edge_and_not_a_dark_lesion_or_a_rim():
    skin = np.full((96, 96, 3), (200, 150, 130), dtype=np.uint8)
    assert illumination(skin) == pytest.approx(1.0)
    assert illumination(_vignetted(skin)) < 0.8
    y, x = np.mgrid[0:96, 0:96]
    lesion = skin.copy()
    lesion[np.hypot(y - 47.5, x - 47.5) < 36] = (60, 40, 30)  # a large dark lesion covering the middle band
    assert illumination(lesion) > 0.95
    rimmed = np.where((np.hypot(y + 0.5 - 48, x + 0.5 - 48) <= 48)[..., None], skin, 0).astype(np.uint8)
    assert illumination(rimmed) == pytest.approx(1.0)  # the rim is outside the field of view
    assert illumination(np.where(rimmed > 0, _vignetted(skin), 0).astype(np.uint8)) < 0.8


def test_overexposure_is_the_clipped_share_of_the_field_of_view():
    skin = np.full((64, 64, 3), (200, 150, 130), dtype=np.uint8)
    assert overexposure(skin) == 0.0
    glare = skin.copy()
    glare[:16] = (255, 240, 230)  # a quarter of the picture with its red channel clipped
    assert overexposure(glare) == pytest.approx(0.25)
    y, x = np.mgrid[0:64, 0:64]
    rimmed = np.where((np.hypot(y + 0.5 - 32, x + 0.5 - 32) <= 32)[..., None], glare, 0).astype(np.uint8)
    inside = np.hypot(y + 0.5 - 32, x + 0.5 - 32) <= 32
    assert overexposure(rimmed) == pytest.approx((inside & (y < 16)).sum() / inside.sum(), abs=0.02)


def test_quality_warning_names_every_reason_and_only_where_the_card_has_a_limit():
    limits = QualityLimits(sharpness=10.0, illumination=0.8, overexposure=0.3)
    assert quality_warning(Quality(sharpness=12.0, illumination=0.9, overexposure=0.1), limits) is None
    blurred = quality_warning(Quality(sharpness=5.0, illumination=0.9, overexposure=0.1), limits)
    assert "blurred or low resolution" in blurred and "unevenly lit" not in blurred and "overexposed" not in blurred
    every = quality_warning(Quality(sharpness=5.0, illumination=0.5, overexposure=0.45), limits)
    assert "blurred or low resolution" in every and "unevenly lit (the edge at 0.50" in every
    assert "overexposed (45% of it clipped to white, above 30%)" in every
    assert quality_warning(Quality(sharpness=5.0, illumination=0.5, overexposure=0.9),
                           QualityLimits(illumination=0.8)).startswith("unevenly")
    assert QualityLimits.from_card({"sharpness_floor": 3.0}) == QualityLimits(3.0, None, None)
    assert QualityLimits.from_card({"overexposure_ceiling": 0.4}).overexposure == 0.4


def test_vignetted_and_overexposed_real_pictures_pass_limits_measured_on_real_pictures():
    from worker.classifier.choices import CLASS_NAMES

    def decoded(path) -> np.ndarray:
        return decode_image(path.read_bytes(), 192)

    reference = [decoded(path) for name in CLASS_NAMES for path in dataset_images(name, 6)]
    floors = QualityLimits.from_card(quality_limits(np.stack(reference)))
    # Lesions that leave skin in the middle band; one that fills it hides the vignetting (see illumination).
    for path in dataset_images("nevus", 9)[6:] + dataset_images("basal cell carcinoma", 9)[6:]:
        picture = decoded(path)
        assert quality_warning(measure_quality(picture), floors) is None, path.name
        warning = quality_warning(measure_quality(_vignetted(picture)), floors)
        assert warning is not None and "unevenly lit" in warning, path.name
        brighter = np.clip(picture.astype(np.float32) * 1.5, 0, 255).astype(np.uint8)
        warning = quality_warning(measure_quality(brighter), floors)
        assert warning is not None and "overexposed" in warning, path.name


def test_blurred_and_low_resolution_pictures_fall_below_the_shipped_models_sharpness_floor():
    card, _ = read_card(DEFAULT_MODEL_DIR)
    floors, size = QualityLimits.from_card(card), card["input_size"]

    def decoded(picture: PILImage.Image) -> np.ndarray:
        out = io.BytesIO()
        picture.save(out, format="PNG")
        return decode_image(out.getvalue(), size)

    for path in dataset_images("melanoma", 3) + dataset_images("nevus", 3) + dataset_images("vascular lesion", 3):
        picture = PILImage.open(path).convert("RGB")
        assert quality_warning(measure_quality(decoded(picture)), floors) is None, path.name
        blurred = quality_warning(measure_quality(decoded(picture.filter(ImageFilter.GaussianBlur(1.5)))), floors)
        assert blurred is not None and "blurred or low resolution" in blurred, path.name
        small = picture.resize((picture.width // 3, picture.height // 3)).resize(picture.size)
        assert quality_warning(measure_quality(decoded(small)), floors) is not None, path.name


def test_a_dermatoscopes_rim_does_not_make_a_blurred_picture_look_sharp():
    floor = read_card(DEFAULT_MODEL_DIR)[0]["sharpness_floor"]
    size = 192
    y, x = np.mgrid[0:size, 0:size]
    inside = np.hypot(y + 0.5 - size / 2, x + 0.5 - size / 2) <= size / 2
    for path in dataset_images("nevus", 3):
        picture = PILImage.open(path).convert("RGB").resize((size, size))
        blurred = np.asarray(picture.filter(ImageFilter.GaussianBlur(2)))
        rimmed = (blurred * inside[..., None]).astype(np.uint8)
        assert sharpness(rimmed) < floor and sharpness(rimmed) == pytest.approx(sharpness(blurred), rel=0.5)
        sharp_rimmed = (np.asarray(picture) * inside[..., None]).astype(np.uint8)
        assert sharpness(sharp_rimmed) >= floor
