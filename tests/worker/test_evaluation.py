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
    # Each headline figure comes with the interval a split this small leaves it.
    for name, (low, high) in overall["intervals_95"].items():
        assert low <= overall[name] <= high
    for plot in ("roc.png", "confusion_matrix.png", "reliability.png", "training_curves.png"):
        assert (tmp_path / plot).stat().st_size > 1000
    assert json.loads((tmp_path / "evaluation.json").read_text()) == report


@pytest.fixture(scope="module")
def other_seed_model(tiny_dataset, tmp_path_factory):
    """A second tiny model, trained on the same data with another seed, so with another test split."""
    from worker.classifier.training import train

    out = tmp_path_factory.mktemp("other-seed-model")
    train(tiny_dataset, out, epochs=1, seed=4, input_size=32, batch_size=8, verbose=0)
    return out


def test_evaluate_swaps_the_sources_colours_where_file_names_tell_two_sources(tiny_model, two_sources, tmp_path):
    from worker.classifier.evaluation import evaluate

    model_dir, _ = tiny_model
    report = evaluate(model_dir, two_sources, split="all", out_dir=tmp_path / "evaluation")
    assert set(report["per_source"]) == {"HAM10000", "ISIC archive"}
    swapped = report["source_swap"]
    assert swapped["intervals_95"]["melanoma_auc"][0] <= swapped["melanoma_auc"] <= \
        swapped["intervals_95"]["melanoma_auc"][1]


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


def test_compare_gives_each_figure_of_both_models_as_evaluate_does_and_their_difference(
        tiny_model, other_seed_model, two_sources, tmp_path):
    from worker.classifier.evaluation import PERTURBATIONS, compare, evaluate

    champion, _ = tiny_model
    report = compare(champion, other_seed_model, two_sources, split="all", draws=200)
    assert (report["images"], report["melanomas"]) == (27, 3)
    figures = report["figures"]
    for model_dir, role in ((champion, "champion"), (other_seed_model, "challenger")):
        evaluated = evaluate(model_dir, two_sources, split="all", out_dir=tmp_path / role)
        changes = {name: evaluated["perturbations"][name]["melanoma_auc"] for name in PERTURBATIONS}
        expected = {
            "melanoma AUC": evaluated["overall"]["melanoma_auc"],
            "melanoma AUC inside ISIC archive": evaluated["per_source"]["ISIC archive"]["melanoma_auc"],
            "melanoma AUC, colours swapped": evaluated["source_swap"]["melanoma_auc"],
            "melanoma AUC, worst change": min(changes.values()),
            "balanced accuracy": evaluated["overall"]["balanced_accuracy"],
            "sensitivity at its threshold": evaluated["overall"]["melanoma_sensitivity"],
            "specificity at its threshold": evaluated["overall"]["melanoma_specificity"],
        }
        # HAM10000 holds no melanoma, so it has no AUC of its own to guard.
        assert list(figures) == list(expected)
        for name, value in expected.items():
            assert figures[name][role] == pytest.approx(value, abs=1e-6), name
        assert changes[report["worst_change"][role]] == min(changes.values())
    for figure in figures.values():
        assert figure["difference"] == pytest.approx(figure["challenger"] - figure["champion"])
        low, high = figure["interval_95"]
        assert low <= high and 0.0 <= figure["challenger_ahead"] <= 1.0
    rule = report["shipping_rule"]
    rises = figures["melanoma AUC"]["difference"] > 0
    falls = [name for name in ("melanoma AUC inside ISIC archive", "melanoma AUC, colours swapped",
                               "melanoma AUC, worst change") if figures[name]["difference"] < -0.01]
    assert rule["passes"] == (rises and not falls)
    assert len(rule["failures"]) == (not rises) + len(falls)


def test_compare_of_a_model_with_itself_finds_no_difference_and_does_not_ship_it(tiny_model, tiny_dataset):
    from worker.classifier.evaluation import compare

    model_dir, card = tiny_model
    report = compare(model_dir, model_dir, tiny_dataset, split="all", draws=100)
    for figure in report["figures"].values():
        assert figure["difference"] in (0.0, None)
        assert figure["interval_95"] in ([0.0, 0.0], None) and figure["challenger_ahead"] in (0.0, None)
    assert report["shipping_rule"] == {"passes": False, "failures": ["melanoma AUC does not rise"],
                                       "rise_beyond_resampling": False}


def test_compare_refuses_models_that_hold_out_different_test_splits(tiny_model, other_seed_model, tiny_dataset):
    from worker.classifier.evaluation import compare

    model_dir, _ = tiny_model
    with pytest.raises(ValueError, match=r"different test splits \(seeds 3 and 4\)"):
        compare(model_dir, other_seed_model, tiny_dataset, split="test")


def test_compare_command_prints_the_verdict_and_writes_json(tiny_model, other_seed_model, two_sources, tmp_path):
    model_dir, _ = tiny_model
    out = tmp_path / "compared.json"
    result = subprocess.run([sys.executable, "-m", "web.cli", "compare", str(model_dir), str(other_seed_model),
                             str(two_sources), "--split", "all", "--draws", "100", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "melanoma AUC, colours swapped" in result.stdout and "95 % interval" in result.stdout
    assert "shipping rule" in result.stdout
    assert json.loads(out.read_text())["melanomas"] == 3
    refused = subprocess.run([sys.executable, "-m", "web.cli", "compare", str(model_dir), str(other_seed_model),
                              str(two_sources)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "--split all" in refused.stderr


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
