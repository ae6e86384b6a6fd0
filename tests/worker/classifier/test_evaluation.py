"""`melanoma evaluate` on a tiny trained model: the held-out split, per source, perturbations, plots."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_evaluate_writes_figures_and_plots_for_the_test_split(tiny_dataset, tiny_model, tmp_path):
    from worker.classifier.evaluation import evaluate
    from worker.classifier.perturbations import PERTURBATIONS

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
    # Each headline figure comes with the interval a split this small leaves it.
    for name, (low, high) in overall["intervals_95"].items():
        assert low <= overall[name] <= high
    for plot in ("roc.png", "confusion_matrix.png", "reliability.png", "training_curves.png"):
        assert (tmp_path / plot).stat().st_size > 1000
    assert json.loads((tmp_path / "evaluation.json").read_text()) == report


def test_evaluate_swaps_the_sources_colours_where_file_names_tell_two_sources(tiny_model, two_sources, tmp_path):
    from worker.classifier.evaluation import evaluate

    model_dir, _ = tiny_model
    report = evaluate(model_dir, two_sources, split="all", out_dir=tmp_path / "evaluation")
    assert set(report["per_source"]) == {"HAM10000", "ISIC archive"}
    swapped = report["source_swap"]
    assert swapped["intervals_95"]["melanoma_auc"][0] <= swapped["melanoma_auc"] <= \
        swapped["intervals_95"]["melanoma_auc"][1]


def test_a_hospitals_collection_without_its_rare_classes_is_scored_whole(tiny_model, tiny_dataset, tmp_path):
    import shutil

    from worker.classifier.evaluation import evaluate

    model_dir, _ = tiny_model
    collection = tmp_path / "hospital"
    for name in ("melanoma", "nevus"):  # two class folders of the nine
        shutil.copytree(tiny_dataset / name, collection / name)
    report = evaluate(model_dir, collection, split="all", out_dir=tmp_path / "evaluation", perturb=False)
    assert report["overall"]["confusion_matrix"] and 0.0 <= report["overall"]["melanoma_auc"] <= 1.0
    assert sum(map(sum, report["overall"]["confusion_matrix"])) == 4 + 5 - 2  # a picture under both is dropped


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
    assert "95 % intervals, resampling these images (overall): bal.acc" in result.stdout
    # Four a class, less the picture filed under two classes.
    assert json.loads((tmp_path / "evaluation.json").read_text())["overall"]["images"] == 9 * 4 - 1
