"""Heatmaps: where the model looked."""


import numpy as np
import pytest
from PIL import Image as PILImage

from tests.conftest import dataset_images


def test_explain_command_draws_a_heatmap_over_the_image(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

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
