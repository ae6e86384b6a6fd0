"""Simulated acquisition changes: another source's colours."""


import numpy as np
import pytest


def test_restyle_takes_the_reference_colours_and_keeps_the_lesion():
    from PIL import Image

    from worker.classifier.perturbations import restyle, swap_sources

    rng = np.random.default_rng(2)
    lesion = rng.uniform(0, 1, (48, 48)) > 0.7
    colours = np.where(lesion[..., None], [90, 40, 30], [210, 160, 140]) + rng.normal(0, 6, (48, 48, 3))
    image = Image.fromarray(colours.clip(0, 255).astype(np.uint8))
    reference = Image.fromarray(rng.normal([170, 120, 160], [20, 10, 15], (48, 48, 3)).clip(0, 255).astype(np.uint8))
    moved = np.asarray(restyle(image, reference), dtype=np.float32)
    np.testing.assert_allclose(moved.mean(axis=(0, 1)), np.asarray(reference, np.float32).mean(axis=(0, 1)), atol=3)
    # The lesion stays darker than the skin around it in every channel: the mapping keeps the order of values.
    assert (moved[lesion].mean(axis=0) < moved[~lesion].mean(axis=0) - 15).all()
    assert swap_sources([image, reference], np.array(["a", "a"])) is None
    swapped = swap_sources([image, reference], np.array(["a", "b"]))
    assert np.asarray(swapped[0], np.float32).mean() == pytest.approx(np.asarray(reference, np.float32).mean(), abs=3)
