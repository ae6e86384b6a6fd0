"""The benchmark commands run end to end on a tiny dataset, so a newcomer's figures come from working code."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from web.config import DEFAULT_MODEL_DIR


def test_model_quality_bench_trains_both_models_and_prints_the_table(tiny_dataset, tmp_path):
    result = subprocess.run([sys.executable, "bench/model_quality.py", "--data", str(tiny_dataset), "--out",
                             str(tmp_path), "--epochs", "1", "--baseline-epochs", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "melanoma AUC, colours swapped" in result.stdout and "inference images/s" in result.stdout
    results = json.loads((tmp_path / "model_quality.json").read_text())
    assert set(results) == {"assignment CNN", "project model"}
    for figures in results.values():
        assert 0.0 <= figures["balanced_accuracy"] <= 1.0 and figures["images_per_second"] > 0
        assert figures["images_per_second_litert"] > 0
        assert figures["test_images"] == 9  # one a class from four a class
    assert results["project model"]["parameters"] < results["assignment CNN"]["parameters"]
    assert "multiply-adds an image" in result.stdout
    assert results["assignment CNN"]["multiply_adds"] == 334_523_008  # as counted by hand below


def test_multiply_adds_are_counted_as_by_hand():
    import importlib.util

    import keras

    spec = importlib.util.spec_from_file_location("model_quality", ROOT / "bench" / "model_quality.py")
    model_quality = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec.loader.exec_module(model_quality)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    inner = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.DepthwiseConv2D(3, padding="same")])
    tiny = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3, padding="same"), inner,
                             keras.layers.Flatten(), keras.layers.Dense(3)])
    # Conv2D: 4*4 outputs * 2 filters * 3*3*1 taps; depthwise: 4*4*2 * 3*3; Dense: 32 * 3.
    assert model_quality.multiply_adds(tiny) == 288 + 288 + 96
    # The course CNN at 180 px: three 3x3 convolutions at 180, 90 and 45 pixels, then 22*22*128 -> 128 -> 9.
    course = 180 * 180 * 32 * 27 + 90 * 90 * 64 * 288 + 45 * 45 * 128 * 576 + 22 * 22 * 128 * 128 + 128 * 9
    assert model_quality.multiply_adds(model_quality.assignment_cnn()) == course == 334_523_008


@pytest.mark.parametrize("options", [["--runtime", "keras", "auto", "--assignment-cnn"],
                                     ["--photo-size", "640x480"]])
def test_inference_speed_bench_decodes_and_predicts_with_the_shipped_model(tiny_dataset, options):
    result = subprocess.run([sys.executable, "bench/inference_speed.py", "--data", str(tiny_dataset), "--images",
                             "16", "--batch", "8", "--repeats", "2", *options],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("images of 640x480," in result.stdout) == ("--photo-size" in options)
    shipped = json.loads((DEFAULT_MODEL_DIR / "card.json").read_text())
    runs = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith(DEFAULT_MODEL_DIR.name)]
    # A CPU machine with ai-edge-litert installed (`make install`) serves with LiteRT when left to choose.
    expected = ["keras", "keras", "litert", "litert"] if "keras" in options else ["litert", "litert"]
    assert [run[-1] for run in runs] == expected
    for input_size, multiply_adds, decode, predict, both, _ in runs:
        assert int(input_size) == shipped["input_size"] and 0 < float(both) <= min(float(decode), float(predict))
        assert int(multiply_adds) > 0
    course = [line.split()[-2:] for line in result.stdout.splitlines() if line.startswith("assignment CNN")]
    assert [runtime for _, runtime in course] == (["keras", "keras", "litert", "litert"] if "keras" in options
                                                  else [])
    assert all(float(speed) > 0 for speed, _ in course)


def test_inference_speed_bench_refuses_a_folder_with_too_few_images(tiny_dataset):
    result = subprocess.run([sys.executable, "bench/inference_speed.py", "--data", str(tiny_dataset), "--images",
                             "1000"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "asked for 1000" in result.stderr


def test_metrics_speed_bench_times_ours_and_scikit_learns_auc_and_balanced_accuracy():
    result = subprocess.run([sys.executable, "bench/metrics_speed.py", "--calls", "20"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=True)
    rows = {line[:20].strip(): line[20:].split() for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"melanoma AUC", "balanced accuracy"}
    assert all(float(value) > 0 for values in rows.values() for value in values)


@pytest.mark.slow
def test_load_bench_runs_the_whole_system_and_prints_its_figures():
    result = subprocess.run([sys.executable, "bench/load.py", "--clients", "3", "--batches", "2", "--images", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "12 to send, 12 accepted, 12 ended with a result, lost 0" in result.stdout, result.stdout
    assert "5xx: 0" in result.stdout and "submit latency: p50" in result.stdout


def test_shift_bench_scores_samples_of_the_models_own_test_split_and_of_unseen_sources(tiny_model, tiny_dataset,
                                                                                      two_sources):
    result = subprocess.run([sys.executable, "bench/shift.py", "--model-dir", str(tiny_model[0]), "--data",
                             str(tiny_dataset), "--unseen", str(two_sources), "--sizes", "5", "--draws", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    # Groups smaller than the sample size (the few nevi and melanomas of this test split) are left out.
    assert [" ".join(row[:-6]) for row in rows] == ["own test split", "own test split, source unknown",
                                                    "unseen: HAM10000", "unseen: ISIC archive"]
    for *_, images, size, low, median, high, flagged in rows:
        assert int(size) == 5 <= int(images) and 0 <= float(low) <= float(median) <= float(high) <= 1
        assert 0 <= float(flagged) <= 1


def test_cross_source_bench_trains_without_the_source_and_scores_every_image_of_it(tiny_dataset, clinic_folder,
                                                                                    tmp_path):
    out = tmp_path / "cross"
    result = subprocess.run([sys.executable, "bench/cross_source.py", str(tiny_dataset), str(clinic_folder),
                             "--sources", "clinic-x", "--out", str(out), "--backbone", "small", "--epochs", "1",
                             "--input-size", "32"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((out / "clinic-x" / "card.json").read_text())
    assert card["training"]["excluded_sources"] == ["clinic-x"]
    assert "clinic-x" not in card["training"]["images_by_source"]
    figures = json.loads((out / "cross_source.json").read_text())["clinic-x"]
    assert (figures["images"], figures["melanomas"]) == (8, 4)
    assert figures["alert_threshold"] == card["alert_threshold"]
    assert set(figures["intervals_95"]) >= {"melanoma_auc", "melanoma_sensitivity", "melanoma_specificity"}
    row = next(line for line in result.stdout.splitlines() if line.startswith("clinic-x "))
    assert row.split()[1:3] == ["8", "4"]
