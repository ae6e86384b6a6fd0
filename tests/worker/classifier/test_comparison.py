"""`melanoma compare` on tiny trained models: both models' figures, their differences, the shipping rule."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def other_seed_model(tiny_dataset, tmp_path_factory):
    """A second tiny model, trained on the same data with another seed, so with another test split."""
    from worker.classifier.training import train

    out = tmp_path_factory.mktemp("other-seed-model")
    train(tiny_dataset, out, epochs=1, seed=4, input_size=32, batch_size=8, verbose=0)
    return out


def test_compare_gives_each_figure_of_both_models_as_evaluate_does_and_their_difference(
        tiny_model, other_seed_model, two_sources, tmp_path):
    from worker.classifier.comparison import compare
    from worker.classifier.evaluation import evaluate
    from worker.classifier.perturbations import PERTURBATIONS

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
    from worker.classifier.comparison import compare

    model_dir, card = tiny_model
    report = compare(model_dir, model_dir, tiny_dataset, split="all", draws=100)
    for figure in report["figures"].values():
        assert figure["difference"] in (0.0, None)
        assert figure["interval_95"] in ([0.0, 0.0], None) and figure["challenger_ahead"] in (0.0, None)
    assert report["shipping_rule"] == {"passes": False, "failures": ["melanoma AUC does not rise"],
                                       "rise_beyond_resampling": False}


def test_compare_refuses_models_that_hold_out_different_test_splits(tiny_model, other_seed_model, tiny_dataset):
    from worker.classifier.comparison import compare

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
