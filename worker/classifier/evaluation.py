"""`melanoma evaluate`: the figures a model is judged by, overall, per source and under simulated
acquisition changes (another dermatoscope's colour, vignetting, focus, resolution, compression)."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from worker.classifier import data
from worker.classifier.artifacts import EVALUATION_DIR, EVALUATION_NAME, HISTORY_NAME
from worker.classifier.audit import DataDirs, data_folders
from worker.classifier.choices import MELANOMA
from worker.classifier.metrics import bootstrap_intervals, figures, sensitivity_specificity, threshold_for_sensitivity
from worker.classifier.perturbations import PERTURBATIONS, as_arrays, swap_sources
from worker.classifier.plots import plot_evaluation
from worker.classifier.predictor import load_classifier
from worker.classifier.quality import QualityLimits, measure_quality, quality_warning


def _oracle_specificity(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str],
                        target: float) -> dict | None:
    """The specificity a threshold set on these very images for the target sensitivity would give: the best
    the model can do here. Its gap to the stored threshold's specificity is the threshold's estimation error."""
    melanoma = class_names.index(MELANOMA)
    is_melanoma = labels == melanoma
    if not is_melanoma.any() or is_melanoma.all():
        return None
    scores = probabilities[:, melanoma]
    threshold = threshold_for_sensitivity(is_melanoma, scores, target)
    sensitivity, specificity = sensitivity_specificity(is_melanoma, scores, threshold)
    return {"target": target, "sensitivity": sensitivity, "specificity": specificity}


def quality_figures(arrays: list[np.ndarray], probabilities: np.ndarray, labels: np.ndarray,
                    class_names: list[str], threshold: float, limits: QualityLimits) -> dict:
    """How the quality checks serve these images: the share they flag, and the share of melanomas that
    reach the dermatologist one way or the other, alerted or flagged for a retake."""
    melanoma = class_names.index(MELANOMA)
    flagged = np.array([quality_warning(measure_quality(array), limits) is not None for array in arrays], dtype=bool)
    is_melanoma = labels == melanoma
    seen = (probabilities[:, melanoma] >= threshold) | flagged
    return {
        "flagged": float(flagged.mean()) if len(flagged) else None,
        "melanomas_alerted_or_flagged": float(seen[is_melanoma].mean()) if is_melanoma.any() else None,
    }


def split_data_sha256(card: dict) -> str:
    """The fingerprint of the data a model's split was drawn from: all its data, unless some trained whole,
    outside the split (train_only_dirs), which older cards never did."""
    return card["training"].get("split_data_sha256", card["training"]["data_sha256"])


def held_out_examples(card: dict, data_dirs: DataDirs, split: str) -> list:
    """The audited examples of DATA_DIR a model is scored on: its held-out test split (split="test", DATA_DIR
    being the data it was trained on) or every one (split="all")."""
    # Every image of another collection may be scored without every class in it; a test split needs them all.
    examples, _ = data.list_examples(data_dirs, tuple(card["class_names"]), every_class=split == "test")
    if split == "test":
        if data.dataset_hash(examples) != split_data_sha256(card):
            raise ValueError("DATA_DIR is not the data this model was trained on, so it has no test split "
                             "here; evaluate with --split all")
        return data.split_examples(examples, seed=card["training"]["seed"]).test
    if split != "all":
        raise ValueError(f"unknown split {split!r}; use test or all")
    return examples


def evaluate(model_dir: str | Path, data_dirs: DataDirs, split: str = "test", out_dir: str | Path | None = None,
             perturb: bool = True, runtime: str = "auto", cache_dir: str | Path | None = None) -> dict:
    """Evaluate the model directory on DATA_DIR (its held-out test split when split="test" and DATA_DIR is
    the data it was trained on; every audited image when split="all"). Writes JSON and PNG plots. runtime and
    cache_dir: how the model runs (predictor.Classifier)."""
    card, classifier = load_classifier(model_dir, runtime=runtime, cache_dir=cache_dir)
    class_names = card["class_names"]
    examples = held_out_examples(card, data_dirs, split)
    pictures = [Image.open(example.path).convert("RGB") for example in examples]
    labels = np.array([example.label for example in examples])
    sources = np.array([example.source for example in examples])

    threshold = card["alert_threshold"]
    limits = QualityLimits.from_card(card)
    headline = ("balanced_accuracy", "melanoma_auc", "melanoma_sensitivity", "melanoma_specificity")

    def judge(images: list[Image.Image], keys: tuple[str, ...] | None = headline) -> tuple[np.ndarray, dict]:
        arrays = as_arrays(images, classifier.input_size)
        probabilities = classifier.predict(arrays)
        result = figures(probabilities, labels, class_names, threshold)
        result = {key: result[key] for key in keys} if keys else result
        if limits != QualityLimits():
            result["quality"] = quality_figures(arrays, probabilities, labels, class_names, threshold, limits)
        return probabilities, result

    probabilities, overall = judge(pictures, keys=None)
    overall["specificity_at_target_sensitivity"] = _oracle_specificity(
        probabilities, labels, class_names, card.get("target_sensitivity", 0.90))
    # A test split holds a few dozen melanomas: its figures are estimates, and a target or another model's
    # figure inside these intervals is not told apart by this split.
    overall["intervals_95"] = bootstrap_intervals(labels, probabilities, class_names.index(MELANOMA), threshold)
    report = {
        "model": f"{card['name']}:{card['version']}",
        "data_dir": ", ".join(map(str, data_folders(data_dirs))),
        "split": split,
        "alert_threshold": threshold,
        "sharpness_floor": limits.sharpness,
        "illumination_floor": limits.illumination,
        "overexposure_ceiling": limits.overexposure,
        "overall": overall,
        "per_source": {source: figures(probabilities[sources == source], labels[sources == source], class_names,
                                       threshold) for source in sorted(set(sources))},
    }
    if perturb:
        report["perturbations"] = {name: judge([change(image) for image in pictures])[1]
                                   for name, change in PERTURBATIONS.items()}
        # The nearest this data comes to another hospital: every lesion shown in the colours of the other
        # source. A model that reads the source instead of the lesion loses its melanomas here.
        swapped = swap_sources(pictures, sources)
        if swapped is not None:
            swapped_probabilities, report["source_swap"] = judge(swapped)
            report["source_swap"]["intervals_95"] = bootstrap_intervals(
                labels, swapped_probabilities, class_names.index(MELANOMA), threshold)
    out_dir = Path(out_dir or Path(model_dir) / EVALUATION_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / EVALUATION_NAME).write_text(json.dumps(report, indent=2) + "\n")
    plot_evaluation(out_dir, probabilities, labels, class_names, threshold, report, Path(model_dir) / HISTORY_NAME)
    return report
