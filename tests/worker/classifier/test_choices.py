"""The choice lists the CLI and the workers read without TensorFlow name what the pipeline really has."""

import subprocess
import sys

from tests.conftest import ROOT
from worker.classifier import choices


def test_the_choices_are_the_backbones_and_augmentations_the_network_and_pipeline_build():
    from worker.classifier.backbones import STAGES
    from worker.classifier.data import AUGMENTATIONS
    from worker.classifier.network import make_model

    assert choices.BACKBONES == ("small", *STAGES)
    assert set(choices.AUGMENTATIONS) == set(AUGMENTATIONS)
    for colour in choices.COLOUR_NORMALISATIONS:
        assert make_model(input_size=32, colour=colour).output_shape == (None, len(choices.CLASS_NAMES))
    assert choices.MELANOMA in choices.CLASS_NAMES


def test_choices_artifacts_and_the_melanoma_help_load_no_tensorflow():
    script = ("import sys; import worker.classifier.choices, worker.classifier.artifacts, worker.cli, web.cli; "
              "print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
