"""The CNN code: metrics on hand-computed cases, threshold choice, decoding, the shipped model, training."""

import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageFilter

from tests.conftest import dataset_images, make_png
from web.config import DEFAULT_MODEL_DIR
from worker.classifier.images import (
    Quality,
    QualityLimits,
    UnreadableImage,
    decode_image,
    illumination,
    measure_quality,
    overexposure,
    quality_limits,
    quality_warning,
    sharpness,
)
from worker.classifier.metrics import (
    balanced_accuracy,
    bootstrap_intervals,
    paired_bootstrap,
    roc_auc,
    sensitivity_specificity,
    threshold_for_sensitivity,
)
from worker.registry import read_card


def test_roc_auc_matches_hand_computed_values():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([1, 1, 0]), np.array([0.9, 0.8, 0.1])) == pytest.approx(1.0)
    # Against every melanoma-benign pair counted one by one, on scores with many ties.
    rng = np.random.default_rng(5)
    for _ in range(20):
        labels = rng.random(60) < 0.3
        labels[:2] = True, False
        scores = np.round(rng.random(60), 1)
        pairs = scores[labels][:, None] - scores[~labels][None, :]
        assert roc_auc(labels, scores) == pytest.approx(np.mean((pairs > 0) + 0.5 * (pairs == 0)))


def test_balanced_accuracy_is_the_mean_recall_per_class():
    labels = np.array([0, 0, 0, 0, 1, 1])
    predicted = np.array([0, 0, 0, 1, 1, 0])
    assert balanced_accuracy(labels, predicted, 3) == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_threshold_reaches_the_requested_sensitivity_on_a_known_distribution():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(200), np.zeros(800)]
    scores = np.r_[rng.normal(0.7, 0.15, 200), rng.normal(0.3, 0.15, 800)]
    for target in (0.8, 0.9, 0.95):
        threshold = threshold_for_sensitivity(labels, scores, target)
        sensitivity, specificity = sensitivity_specificity(labels, scores, threshold)
        assert target <= sensitivity < target + 1 / 200 + 1e-9
        assert 0 < specificity < 1
    with pytest.raises(ValueError, match="no positive"):
        threshold_for_sensitivity(np.zeros(3), np.ones(3), 0.9)


def test_threshold_keeps_a_margin_so_rounding_loses_no_melanoma_it_was_set_to_keep():
    labels = np.array([1, 1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.6, 0.2, 0.5, 0.3, 0.1])
    threshold = threshold_for_sensitivity(labels, scores, 0.75)  # keeps three of four: 0.6 is the last one
    assert threshold == pytest.approx(0.55)  # halfway to the next lower score, a benign lesion's 0.5
    rounded = scores - 1e-5  # another runtime's probabilities, a little lower
    assert sensitivity_specificity(labels, rounded, threshold) == (0.75, 1.0)
    # Where the next lower score is closer than the tolerance, the melanoma keeps its margin.
    close = np.array([0.9, 0.8, 0.6, 0.2, 0.59998, 0.3, 0.1])
    assert threshold_for_sensitivity(labels, close, 0.75) == pytest.approx(0.6 - 1e-4)
    assert threshold_for_sensitivity(np.array([1]), np.array([0.00005]), 1.0) == 0.0


def _three_class_scores(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 plays melanoma: its probability is higher, on average, where it is the true class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], per_class)
    logits = rng.normal(0.0, 1.0, (len(labels), 3))
    logits[np.arange(len(labels)), labels] += 1.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities


def test_bootstrap_intervals_hold_the_measured_figure_and_narrow_with_more_images():
    labels, probabilities = _three_class_scores(30, seed=1)
    intervals = bootstrap_intervals(labels, probabilities, 1, threshold=0.4, draws=500)
    positive = labels == 1
    sensitivity, specificity = sensitivity_specificity(positive, probabilities[:, 1], 0.4)
    measured = {"melanoma_auc": roc_auc(positive, probabilities[:, 1]), "melanoma_sensitivity": sensitivity,
                "melanoma_specificity": specificity,
                "balanced_accuracy": balanced_accuracy(labels, probabilities.argmax(axis=1), 3)}
    assert set(intervals) == set(measured)
    for name, value in measured.items():
        low, high = intervals[name]
        assert low <= value <= high and high - low > 0.02
    # Nine times the images: the intervals narrow about three times.
    many_labels, many_probabilities = _three_class_scores(270, seed=2)
    narrow = bootstrap_intervals(many_labels, many_probabilities, 1, threshold=0.4, draws=500)
    for name, (low, high) in intervals.items():
        assert narrow[name][1] - narrow[name][0] < (high - low) / 2
    assert bootstrap_intervals(labels, probabilities, 1, 0.3, draws=50, seed=7) == \
        bootstrap_intervals(labels, probabilities, 1, 0.3, draws=50, seed=7)


def test_bootstrap_intervals_on_hand_computed_cases():
    # Two melanomas, one above the threshold: a draw holds it twice, once or not at all (1/4, 1/2, 1/4), so
    # the sensitivity's 95 % interval runs from 0 to 1. Every draw ranks the melanomas over the benign lesions.
    labels = np.array([1, 1, 0, 0, 0])
    probabilities = np.array([[0.1, 0.9], [0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]])
    intervals = bootstrap_intervals(labels, probabilities, 1, threshold=0.5, draws=400)
    assert intervals["melanoma_sensitivity"] == [0.0, 1.0]
    assert intervals["melanoma_auc"] == [1.0, 1.0] and intervals["melanoma_specificity"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals(labels, probabilities, 1, 0.5, level=95)


def test_paired_bootstrap_cancels_what_two_models_share_and_finds_a_real_difference():
    labels, probabilities = _three_class_scores(30, seed=3)
    positive = labels == 1
    noisy = probabilities[:, 1]
    better = noisy + 0.5 * positive  # the same scores, melanomas lifted: ranked better on every resampling

    def statistic(chosen):
        return {"auc": (roc_auc(positive[chosen], noisy[chosen]), roc_auc(positive[chosen], better[chosen])),
                "same": (roc_auc(positive[chosen], noisy[chosen]), roc_auc(positive[chosen], noisy[chosen]))}

    spread = paired_bootstrap(labels, statistic, draws=300)
    assert spread["same"] == {"interval": [0.0, 0.0], "second_ahead": 0.0}
    low, high = spread["auc"]["interval"]
    assert 0.0 < low < roc_auc(positive, better) - roc_auc(positive, noisy) < high
    assert spread["auc"]["second_ahead"] == 1.0
    # Each model alone spreads wider than their difference does: the images they share cancel out.
    alone = bootstrap_intervals(labels, probabilities, 1, threshold=0.5, draws=300)["melanoma_auc"]
    assert high - low < alone[1] - alone[0]


def test_paired_bootstrap_on_a_hand_computed_case():
    # Two melanomas, one benign lesion. The first model ranks melanoma 0 above the benign lesion and
    # melanoma 1 below it; the second ranks both above. Resampled within class, the melanomas come out as
    # {0, 0}, {0, 1} (twice as likely) or {1, 1}: AUC 1, 0.5, 0 for the first, 1 for the second, so the
    # difference is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4 and the second is ahead three times in four.
    labels = np.array([1, 1, 0])
    first, second = np.array([0.9, 0.1, 0.5]), np.array([0.9, 0.8, 0.5])

    def statistic(chosen):
        return {"auc": (roc_auc(labels[chosen] == 1, first[chosen]), roc_auc(labels[chosen] == 1, second[chosen])),
                "undefined": (float("nan"), 0.0)}

    spread = paired_bootstrap(labels, statistic, draws=4000)
    assert spread["auc"]["interval"] == [0.0, 1.0]
    assert spread["auc"]["second_ahead"] == pytest.approx(0.75, abs=0.03)
    assert spread["undefined"] == {"interval": None, "second_ahead": None}


def test_decode_image_gives_the_input_size_whatever_the_source_size():
    for size in ((640, 480), (33, 200), (180, 180)):
        array = decode_image(make_png(*size), 96)
        assert array.shape == (96, 96, 3) and array.dtype == np.uint8
    with pytest.raises(UnreadableImage, match="empty"):
        decode_image(b"", 96)
    with pytest.raises(UnreadableImage, match="not a readable image"):
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


def test_shipped_model_card_matches_its_artifact():
    card, artifact = read_card(DEFAULT_MODEL_DIR)
    assert card["class_names"][3] == "melanoma" and len(card["class_names"]) == 9
    assert 0.0 < card["alert_threshold"] < 1.0
    assert artifact.stat().st_size < 20 * 1024 * 1024
    for key in ("input_size", "metrics", "training", "trained_at"):
        assert key in card
    assert card["training"]["data_sha256"]


@pytest.mark.parametrize("exponent", [1, 2, 3, 6, 7, 6.5])
def test_colour_constancy_power_matches_numpy(exponent):
    from worker.classifier.network import _power

    values = np.array([0.0, 1e-6, 0.3, 0.999, 1.7], dtype=np.float32)
    np.testing.assert_allclose(np.asarray(_power(values, exponent)), values ** exponent, rtol=1e-5, atol=1e-30)


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
    from worker.classifier.evaluation import PERTURBATIONS

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
    from worker.classifier.network import CLASS_NAMES

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


def test_shipped_model_accepts_images_of_any_size_and_predicts_a_list():
    from worker.classifier.predictor import Classifier

    card, artifact = read_card(DEFAULT_MODEL_DIR)
    classifier = Classifier(str(artifact), card["class_names"], card["input_size"])
    images = [decode_image(make_png(w, h, colour), card["input_size"])
              for w, h, colour in ((300, 200, (200, 100, 80)), (50, 90, (90, 60, 50)))]
    probabilities = classifier.predict(images)
    assert probabilities.shape == (2, 9)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    # The model resizes inside itself, so a raw image of another size gives a valid answer too.
    raw = np.asarray(PILImage.new("RGB", (250, 170), (150, 90, 70)), dtype=np.float32)[None]
    assert np.asarray(classifier.model(raw)).shape == (1, 9)
    assert classifier.predict([]).shape == (0, 9)


def test_training_on_a_tiny_dataset_writes_a_model_that_reloads_with_the_same_outputs(tiny_dataset, tiny_model):
    from worker.classifier.predictor import Classifier

    model_dir, card = tiny_model
    assert card["training"]["audit"]["excluded_conflicts"] == 2
    assert (model_dir / "audit.json").is_file() and (model_dir / "history.json").is_file()
    assert json.loads((model_dir / "card.json").read_text()) == card
    assert card["sharpness_floor"] > 0  # the tiny pictures are noise: sharp
    assert card["training"]["seconds"] > 0  # how long it took, for the 20-minute budget on the real data
    loaded_card, artifact = read_card(model_dir)
    classifier = Classifier(str(artifact), loaded_card["class_names"], loaded_card["input_size"])
    # The temperature fitted on validation travels inside the served model.
    assert classifier.model.get_layer("calibration").temperature == pytest.approx(card["temperature"])
    image = decode_image((tiny_dataset / "melanoma" / "img0.jpg").read_bytes(), 32)
    first = classifier.predict([image])
    again = Classifier(str(artifact), loaded_card["class_names"], 32).predict([image])
    np.testing.assert_allclose(first, again, rtol=1e-5)


def test_training_never_writes_over_a_model(tiny_dataset, tiny_model):
    from worker.classifier.training import train
    from worker.registry import file_sha256

    model_dir, card = tiny_model
    with pytest.raises(ValueError, match="already holds a model"):
        train(tiny_dataset, model_dir, epochs=1, input_size=32, batch_size=8)
    assert file_sha256(model_dir / "model.keras") == card["artifact_sha256"]


def test_training_refuses_a_folder_without_the_class_folders(tmp_path):
    from worker.classifier.training import train

    with pytest.raises(ValueError, match="no folder for classes"):
        train(tmp_path, tmp_path / "out", epochs=1)


def test_expected_calibration_error_on_a_hand_computed_case():
    from worker.classifier.metrics import expected_calibration_error

    # Two bins: confidence 0.9 with 1 of 2 right (gap 0.4), confidence 0.6 with 2 of 2 right (gap 0.4).
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probabilities, labels, bins=10) == pytest.approx(0.4)


def test_temperature_scaling_recovers_a_known_overconfidence():
    from worker.classifier.metrics import apply_temperature, expected_calibration_error, fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (4000, 3))
    labels = np.array([rng.choice(3, p=np.exp(row) / np.exp(row).sum()) for row in logits])
    overconfident = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    calibrated = apply_temperature(overconfident, temperature)
    assert expected_calibration_error(calibrated, labels) < expected_calibration_error(overconfident, labels) / 3


def test_explain_command_draws_a_heatmap_over_the_image(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT, dataset_images

    image = dataset_images("melanoma", 1)[0]
    out = tmp_path / "heat.png"
    result = subprocess.run([sys.executable, "-m", "web.cli", "explain", str(image), "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "melanoma probability" in result.stdout
    with PILImage.open(out) as heatmap:
        assert heatmap.size == (180, 180)
        assert not np.array_equal(np.asarray(heatmap.convert("RGB")), np.asarray(PILImage.open(image).convert("RGB")))


def test_occlusion_map_marks_the_region_that_carries_the_class():
    from worker.classifier.explain import occlusion_map

    class BrightCentre:
        """A stand-in network whose 'melanoma' score is the brightness of the image centre."""

        class_names = ["melanoma", "other"]
        input_size = 48

        def predict(self, images):
            centre = np.array([image[18:30, 18:30].mean() / 255 for image in images])
            return np.stack([centre, 1 - centre], axis=1)

    image = np.zeros((48, 48, 3), dtype=np.uint8)
    image[18:30, 18:30] = 255
    drops, baseline = occlusion_map(BrightCentre(), image, grid=6)
    assert baseline == pytest.approx(1.0)
    assert drops[2:4, 2:4].min() > 0 and drops[0].max() == 0 and drops[:, 0].max() == 0


@pytest.mark.parametrize("name", ["basic", "rim", "acquisition"])
def test_augmentation_is_seeded_keeps_shape_and_range_and_changes_the_picture(name):
    import tensorflow as tf

    from worker.classifier.data import AUGMENTATIONS

    augment = AUGMENTATIONS[name]
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.float32)
    image = tf.constant(pixels)
    first = augment(image, tf.constant([1, 2], tf.int64)).numpy()
    again = augment(image, tf.constant([1, 2], tf.int64)).numpy()
    other = augment(image, tf.constant([3, 4], tf.int64)).numpy()
    assert first.shape == (64, 64, 3) and 0.0 <= first.min() and first.max() <= 255.0
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_style_mix_moves_colour_and_lighting_between_images_and_keeps_the_structure():
    import tensorflow as tf

    from worker.classifier.data import fourier_style_mix

    rng = np.random.default_rng(0)
    pattern = rng.uniform(0, 1, (64, 64, 1)) > 0.5
    reddish = np.where(pattern, [200.0, 90.0, 80.0], [230.0, 170.0, 160.0]).astype(np.float32)
    bluish = np.where(~pattern, [60.0, 90.0, 170.0], [120.0, 140.0, 210.0]).astype(np.float32)
    batch = tf.constant(np.stack([reddish, bluish]))
    mixed = fourier_style_mix(batch, tf.constant([5, 6], tf.int64), probability=1.0).numpy()
    again = fourier_style_mix(batch, tf.constant([5, 6], tf.int64), probability=1.0).numpy()
    np.testing.assert_array_equal(mixed, again)
    assert mixed.shape == (2, 64, 64, 3) and mixed.min() >= 0.0 and mixed.max() <= 255.0
    # Each image's blue channel moves toward the other's, by a random share: never away, and clearly on average...
    moves = []
    for seed in range(6):
        mixed_again = fourier_style_mix(batch, tf.constant([seed, 1], tf.int64), probability=1.0).numpy()
        moves.append([mixed_again[0, ..., 2].mean() - reddish[..., 2].mean(),
                      bluish[..., 2].mean() - mixed_again[1, ..., 2].mean()])
    assert np.min(moves) > -0.5 and np.mean(moves) > 5
    # ...while each keeps its own pattern of light and dark cells.
    for index, original in enumerate((reddish, bluish)):
        assert np.corrcoef(mixed[index, ..., 0].ravel(), original[..., 0].ravel())[0, 1] > 0.9
    untouched = fourier_style_mix(batch, tf.constant([5, 6], tf.int64), probability=0.0).numpy()
    np.testing.assert_allclose(untouched, batch.numpy(), atol=0.05)


def test_channel_standardisation_removes_another_devices_gain_and_offset():
    from worker.classifier.network import ChannelStandardisation

    rng = np.random.default_rng(4)
    image = rng.uniform(0.2, 0.6, (1, 32, 32, 3)).astype(np.float32)
    other_device = image * np.array([0.7, 1.1, 0.9], np.float32) + np.array([0.1, -0.05, 0.2], np.float32)
    layer = ChannelStandardisation()
    np.testing.assert_allclose(np.asarray(layer(other_device)), np.asarray(layer(image)), atol=2e-3)
    out = np.asarray(layer(image))
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.5, atol=0.01)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_dermatoscope_rim_blackens_outside_a_round_window_of_several_sizes():
    import tensorflow as tf

    from worker.classifier.data import dermatoscope_rim

    image = tf.fill((64, 64, 3), 200.0)
    rims = [dermatoscope_rim(image, tf.constant([seed, 0], tf.int64), 1.0).numpy() for seed in range(8)]
    for rimmed in rims:
        assert rimmed[0, 0].max() == 0.0 and rimmed[-1, -1].max() == 0.0  # the corners are outside
        np.testing.assert_array_equal(rimmed[28:36, 28:36], 200.0)  # the lesion in the centre is not
    assert len({float(rimmed.mean()) for rimmed in rims}) > 1
    untouched = dermatoscope_rim(image, tf.constant([1, 0], tf.int64), 0.0).numpy()
    np.testing.assert_array_equal(untouched, image.numpy())


def test_field_standardisation_ignores_a_dermatoscopes_black_rim():
    from worker.classifier.network import ChannelStandardisation

    rng = np.random.default_rng(5)
    image = rng.uniform(0.3, 0.8, (1, 48, 48, 3)).astype(np.float32)
    y, x = np.mgrid[0:48, 0:48]
    inside = np.hypot(y - 23.5, x - 23.5) <= 24
    rimmed = np.where(inside[None, ..., None], image, 0.0).astype(np.float32)
    greyer_rim = np.where(inside[None, ..., None], image, 0.05).astype(np.float32)
    field = ChannelStandardisation.from_config(ChannelStandardisation(field_only=True).get_config())
    assert field.field_only and not ChannelStandardisation.from_config(ChannelStandardisation().get_config()).field_only
    pixels = image[0][inside]
    expected = np.clip(0.5 + (pixels - pixels.mean(axis=0)) / (4 * pixels.std(axis=0) + 1e-3), 0, 1)
    np.testing.assert_allclose(np.asarray(field(rimmed))[0][inside], expected, atol=2e-3)
    np.testing.assert_allclose(np.asarray(field(greyer_rim))[0][inside], expected, atol=2e-3)
    # Without field_only the rim drags the mean down and the spread up, and the lesion comes out changed.
    whole = np.asarray(ChannelStandardisation()(rimmed))[0][inside]
    assert np.abs(whole - expected).mean() > 0.05
    np.testing.assert_array_equal(np.asarray(field(rimmed))[0][~inside], 0.5)  # the rim reads as plain skin
    # A black lesion in the centre stays black; a picture that is all dark still comes out finite.
    lesion = image.copy()
    lesion[0, 20:28, 20:28] = 0.0
    assert np.asarray(field(lesion))[0, 20:28, 20:28].max() == 0.0
    assert np.isfinite(np.asarray(field(image * 0.05))).all()


def test_recipe_defaults_take_only_the_values_given():
    from worker.classifier.training import RECIPES, recipe_defaults

    assert recipe_defaults("efficientnet_lite0") == RECIPES["efficientnet_lite0"]
    changed = recipe_defaults("efficientnet_lite0", epochs=3, style_mix=False, colour=None, loss="logit-adjusted")
    assert changed == RECIPES["efficientnet_lite0"] | {"epochs": 3, "style_mix": False, "loss": "logit-adjusted"}
    with pytest.raises(ValueError, match="learning_rate"):
        recipe_defaults("small", learning_rate=0.1)


def test_logit_adjusted_loss_is_the_crossentropy_of_the_log_probabilities_shifted_by_the_log_priors():
    import tensorflow as tf

    from worker.classifier.training import log_priors, logit_adjusted_loss

    # Three classes, the last never seen in training: it takes the commonest class's prior, not log 0.
    prior = log_priors(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(prior, np.log([0.75, 0.25, 0.75]))
    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]], np.float32)
    targets = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    shifted = np.log(probabilities) + prior
    adjusted = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    smoothed = targets * 0.95 + 0.05 / 3
    expected = -(smoothed * np.log(adjusted)).sum(axis=1).mean()
    loss = logit_adjusted_loss(prior)(tf.constant(targets), tf.constant(probabilities))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # The rare class's image costs more than under plain cross-entropy: its prior pulls its logit down.
    assert float(logit_adjusted_loss(prior)(tf.constant(targets[:1]), tf.constant(probabilities[:1]))) > \
        -(smoothed[0] * np.log(probabilities[0])).sum()


def test_training_records_its_loss_and_refuses_an_unknown_one_before_writing(tiny_dataset, tiny_model, tmp_path):
    from worker.classifier.training import train

    assert tiny_model[1]["training"]["loss"] == "logit-adjusted"
    with pytest.raises(ValueError, match="choose one of"):
        train(tiny_dataset, tmp_path / "new", loss="focal")
    assert not (tmp_path / "new").exists()


def test_learning_rate_rises_over_the_warmup_then_decays_to_zero():
    from worker.classifier.training import learning_rate_schedule

    def rates(schedule, steps):
        return np.array([float(schedule(step)) for step in steps])

    warm = rates(learning_rate_schedule(1e-3, 100, warmup_steps=10), [0, 5, 10, 55, 100])
    np.testing.assert_allclose(warm, [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-6)
    np.testing.assert_allclose(rates(learning_rate_schedule(1e-3, 100), [0, 50, 100]), [1e-3, 5e-4, 0.0],
                               atol=1e-6)
