"""`melanoma evaluate` on a tiny trained model: the held-out split, per source, perturbations, plots."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT


def test_evaluate_writes_figures_and_plots_for_the_test_split(tiny_dataset, tiny_model, tmp_path):
    from worker.classifier.evaluation import PERTURBATIONS, evaluate

    model_dir, card = tiny_model
    report = evaluate(model_dir, tiny_dataset, split="test", out_dir=tmp_path)
    overall = report["overall"]
    assert overall["images"] == card["training"]["split_sizes"]["test"]
    assert sum(map(sum, overall["confusion_matrix"])) == overall["images"]
    assert 0.0 <= overall["balanced_accuracy"] <= 1.0 and 0.0 <= overall["ece"] <= 1.0
    assert set(overall["per_class"]) == set(card["class_names"])
    assert set(report["perturbations"]) == set(PERTURBATIONS)
    # Every blurred picture gets the quality warning; the untouched ones (noise, so sharp) mostly not.
    assert report["perturbations"]["blur"]["quality"]["flagged"] == 1.0
    assert report["overall"]["quality"]["flagged"] < 0.5
    assert report["perturbations"]["blur"]["quality"]["melanomas_alerted_or_flagged"] == 1.0
    assert list(report["per_source"]) == ["unknown"]
    # The best threshold for these images reaches the target and, where the stored one also does, is at
    # least as specific.
    oracle = overall["specificity_at_target_sensitivity"]
    assert oracle["target"] == card["target_sensitivity"] and oracle["sensitivity"] >= oracle["target"]
    if overall["melanoma_sensitivity"] >= oracle["target"]:
        assert oracle["specificity"] >= overall["melanoma_specificity"]
    for plot in ("roc.png", "confusion_matrix.png", "reliability.png", "training_curves.png"):
        assert (tmp_path / plot).stat().st_size > 1000
    assert json.loads((tmp_path / "evaluation.json").read_text()) == report


def test_evaluate_refuses_a_test_split_of_data_the_model_never_saw(tiny_model, tmp_path):
    from worker.classifier.evaluation import evaluate

    model_dir, card = tiny_model
    other = tmp_path / "Other"
    for name in card["class_names"]:
        (other / name).mkdir(parents=True)
    with pytest.raises(ValueError, match="--split all"):
        evaluate(model_dir, other, split="test")


def test_evaluate_command_prints_a_table(tiny_dataset, tiny_model, tmp_path):
    model_dir, _ = tiny_model
    result = subprocess.run([sys.executable, "-m", "web.cli", "evaluate", str(model_dir), str(tiny_dataset),
                             "--split", "all", "--no-perturb", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "overall" in result.stdout and "mel.AUC" in result.stdout
    assert "a threshold set on these images for sensitivity 0.90 would give specificity" in result.stdout
    # Four a class, less the picture filed under two classes.
    assert json.loads((tmp_path / "evaluation.json").read_text())["overall"]["images"] == 9 * 4 - 1


def test_restyle_takes_the_reference_colours_and_keeps_the_lesion():
    from PIL import Image

    from worker.classifier.evaluation import restyle, swap_sources

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
