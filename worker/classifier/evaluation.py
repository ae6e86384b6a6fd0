"""`melanoma evaluate`: the figures a model is judged by, overall, per source and under simulated
acquisition changes (another dermatoscope's colour, vignetting, focus, resolution, compression)."""

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from worker.classifier import data
from worker.classifier.images import QualityLimits, decode_image, measure_quality, quality_warning
from worker.classifier.metrics import (
    balanced_accuracy,
    bootstrap_intervals,
    expected_calibration_error,
    paired_bootstrap,
    roc_auc,
    sensitivity_specificity,
    threshold_for_sensitivity,
)
from worker.classifier.network import MELANOMA
from worker.classifier.predictor import load_classifier

EVALUATION_NAME = "evaluation.json"


def _cast(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) * np.array([1.12, 0.95, 0.85])
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _vignette(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    height, width = pixels.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    radius = np.hypot((y - height / 2) / (height / 2), (x - width / 2) / (width / 2)) / np.sqrt(2)
    return Image.fromarray(np.clip(pixels * (1 - 0.6 * radius ** 2)[..., None], 0, 255).astype(np.uint8))


def _rim(image: Image.Image) -> Image.Image:
    """A contact dermatoscope's round window: black outside the circle that touches the picture's sides."""
    pixels = np.asarray(image, dtype=np.float32)
    height, width = pixels.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    inside = np.hypot((y + 0.5 - height / 2) / (height / 2), (x + 0.5 - width / 2) / (width / 2)) <= 1.0
    return Image.fromarray((pixels * inside[..., None]).astype(np.uint8))


def _jpeg(image: Image.Image, quality: int = 30) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


PERTURBATIONS = {
    "colour cast": _cast,
    "vignetting": _vignette,
    "dermatoscope rim": _rim,
    "blur": lambda image: image.filter(ImageFilter.GaussianBlur(2)),
    "low resolution": lambda image: image.resize((image.width // 3, image.height // 3)).resize(image.size),
    "jpeg quality 30": _jpeg,
    "brighter": lambda image: Image.fromarray(np.clip(np.asarray(image, np.float32) * 1.3, 0, 255).astype(np.uint8)),
}


def restyle(image: Image.Image, reference: Image.Image) -> Image.Image:
    """The image with each colour channel's histogram matched to the reference's: the lesion's pattern of
    light and dark stays, the colour, exposure and contrast of the reference's dermatoscope come with it.
    Not an affine change, so no per-channel normalisation inside a model can undo it exactly."""
    pixels = np.asarray(image, dtype=np.uint8)
    style = np.asarray(reference, dtype=np.uint8)
    channels = []
    for channel in range(3):
        values, inverse, counts = np.unique(pixels[..., channel], return_inverse=True, return_counts=True)
        target_values, target_counts = np.unique(style[..., channel], return_counts=True)
        quantiles = (np.cumsum(counts) - counts / 2) / counts.sum()
        target_quantiles = (np.cumsum(target_counts) - target_counts / 2) / target_counts.sum()
        channels.append(np.interp(quantiles, target_quantiles, target_values)[inverse].reshape(pixels.shape[:2]))
    return Image.fromarray(np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8))


def swap_sources(pictures: list[Image.Image], sources: np.ndarray, seed: int = 0) -> list[Image.Image] | None:
    """Each picture restyled after a random picture of another source; None where there is one source."""
    if len(set(sources)) < 2:
        return None
    rng = np.random.default_rng(seed)
    swapped = []
    for image, source in zip(pictures, sources, strict=True):
        others = np.flatnonzero(sources != source)
        swapped.append(restyle(image, pictures[int(rng.choice(others))]))
    return swapped


def as_arrays(images: list[Image.Image], input_size: int) -> list[np.ndarray]:
    """Pictures as the worker sees them: stored losslessly, then through the serving decoder."""
    arrays = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        arrays.append(decode_image(buffer.getvalue(), input_size))
    return arrays


def figures(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str], threshold: float) -> dict:
    """Accuracy, balanced accuracy, per-class precision/recall, confusion matrix, melanoma AUC, sensitivity
    and specificity at the threshold, and expected calibration error."""
    melanoma = class_names.index(MELANOMA)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((len(class_names), len(class_names)), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for index, name in enumerate(class_names):
        support = int(confusion[index].sum())
        called = int(confusion[:, index].sum())
        per_class[name] = {
            "support": support,
            "precision": float(confusion[index, index] / called) if called else None,
            "recall": float(confusion[index, index] / support) if support else None,
        }
    is_melanoma = labels == melanoma
    sensitivity, specificity = sensitivity_specificity(is_melanoma, probabilities[:, melanoma], threshold)
    return {
        "images": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)) if len(labels) else None,
        "balanced_accuracy": balanced_accuracy(labels, predicted, len(class_names)) if len(labels) else None,
        "melanoma_auc": _finite(roc_auc(is_melanoma, probabilities[:, melanoma])),
        "melanoma_sensitivity": _finite(sensitivity),
        "melanoma_specificity": _finite(specificity),
        "ece": expected_calibration_error(probabilities, labels) if len(labels) else None,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


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


def _finite(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def held_out_examples(card: dict, data_dir: str | Path, split: str) -> list:
    """The audited examples of DATA_DIR a model is scored on: its held-out test split (split="test", DATA_DIR
    being the data it was trained on) or every one (split="all")."""
    examples, _ = data.list_examples(data_dir, tuple(card["class_names"]))
    if split == "test":
        if data.dataset_hash(examples) != card["training"]["data_sha256"]:
            raise ValueError("DATA_DIR is not the data this model was trained on, so it has no test split "
                             "here; evaluate with --split all")
        return data.split_examples(examples, seed=card["training"]["seed"]).test
    if split != "all":
        raise ValueError(f"unknown split {split!r}; use test or all")
    return examples


def evaluate(model_dir: str | Path, data_dir: str | Path, split: str = "test", out_dir: str | Path | None = None,
             perturb: bool = True) -> dict:
    """Evaluate the model directory on DATA_DIR (its held-out test split when split="test" and DATA_DIR is
    the data it was trained on; every audited image when split="all"). Writes JSON and PNG plots."""
    card, classifier = load_classifier(model_dir)
    class_names = card["class_names"]
    examples = held_out_examples(card, data_dir, split)
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
        "data_dir": str(data_dir),
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
    out_dir = Path(out_dir or Path(model_dir) / "evaluation")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / EVALUATION_NAME).write_text(json.dumps(report, indent=2) + "\n")
    _plot(out_dir, probabilities, labels, class_names, threshold, report, Path(model_dir) / "history.json")
    return report


# What `compare` reports, in its order; the melanoma AUCs inside each source holding both melanomas and other
# lesions come after the first.
SPLIT_AUC, SWAPPED_AUC, WORST_AUC = "melanoma AUC", "melanoma AUC, colours swapped", "melanoma AUC, worst change"
SHIPPING_TOLERANCE = 0.01


def _source_auc(source: str) -> str:
    return f"melanoma AUC inside {source}"


def comparison_path(champion_dir: str | Path, challenger_dir: str | Path) -> Path:
    """Where `compare` writes its JSON unless told: beside the challenger's evaluation."""
    return Path(challenger_dir) / "evaluation" / f"compared-with-{Path(champion_dir).resolve().name}.json"


def compare(champion_dir: str | Path, challenger_dir: str | Path, data_dir: str | Path, split: str = "test",
            draws: int = 2000, seed: int = 0, out_path: str | Path | None = None) -> dict:
    """Both models scored on the same images, untouched, under each simulated acquisition change and with the
    sources' colours swapped, and the difference of each figure with the interval a paired bootstrap gives
    it; written as JSON to out_path (default `comparison_path`). The verdict is the shipping rule of
    worker/classifier/TRIALS.md: the challenger replaces the champion only if the melanoma AUC rises on these
    images and, inside each source, with colours swapped and under the worst change, loses at most 0.01."""
    (champion, first), (challenger, second) = load_classifier(champion_dir), load_classifier(challenger_dir)
    class_names = champion["class_names"]
    if challenger["class_names"] != class_names:
        raise ValueError("the two models name different classes, so their figures do not compare")
    examples = held_out_examples(champion, data_dir, split)
    # The same data and seed give the same split; the champion's data was checked against DATA_DIR above.
    if split == "test" and challenger["training"]["data_sha256"] != champion["training"]["data_sha256"]:
        raise ValueError("DATA_DIR is not the data the challenger was trained on, so it has no test split "
                         "here; compare with --split all")
    if split == "test" and challenger["training"]["seed"] != champion["training"]["seed"]:
        raise ValueError("the two models hold out different test splits (seeds "
                         f"{champion['training']['seed']} and {challenger['training']['seed']}), so each has "
                         "trained on images the other is tested on; compare models trained with the same seed, "
                         "or on other data with --split all")
    pictures = [Image.open(example.path).convert("RGB") for example in examples]
    labels = np.array([example.label for example in examples])
    sources = np.array([example.source for example in examples])
    melanoma = class_names.index(MELANOMA)
    positive = labels == melanoma
    if positive.all() or not positive.any():
        raise ValueError("these images need both melanomas and other lesions to compare melanoma AUCs")

    # Each condition's pictures are made once, scored by both models and let go: a whole collection under
    # nine conditions would not fit in memory at once.
    conditions = {"untouched": lambda: pictures}
    conditions.update({name: (lambda change=change: [change(image) for image in pictures])
                       for name, change in PERTURBATIONS.items()})
    if len(set(sources)) > 1:
        conditions["colours swapped"] = lambda: swap_sources(pictures, sources)
    scores: list[dict[str, np.ndarray]] = [{}, {}]
    for name, make in conditions.items():
        images = make()
        for model_scores, classifier in zip(scores, (first, second), strict=True):
            model_scores[name] = classifier.predict(as_arrays(images, classifier.input_size))
    thresholds = (champion["alert_threshold"], challenger["alert_threshold"])
    mixed_sources = [source for source in sorted(set(sources))
                     if positive[sources == source].any() and not positive[sources == source].all()]

    def model_figures(model: int, chosen: np.ndarray) -> tuple[dict[str, float], str]:
        probabilities, is_melanoma = scores[model], positive[chosen]
        untouched = probabilities["untouched"][chosen]
        sensitivity, specificity = sensitivity_specificity(is_melanoma, untouched[:, melanoma], thresholds[model])
        result = {SPLIT_AUC: roc_auc(is_melanoma, untouched[:, melanoma])}
        for source in mixed_sources:
            inside = chosen[sources[chosen] == source]
            result[_source_auc(source)] = roc_auc(positive[inside], probabilities["untouched"][inside, melanoma])
        if "colours swapped" in probabilities:
            result[SWAPPED_AUC] = roc_auc(is_melanoma, probabilities["colours swapped"][chosen, melanoma])
        changed = {name: roc_auc(is_melanoma, probabilities[name][chosen, melanoma]) for name in PERTURBATIONS}
        worst = min(changed, key=changed.get)
        result[WORST_AUC] = changed[worst]
        result["balanced accuracy"] = balanced_accuracy(labels[chosen], untouched.argmax(axis=1), len(class_names))
        result["sensitivity at its threshold"] = sensitivity
        result["specificity at its threshold"] = specificity
        return result, worst

    everything = np.arange(len(labels))
    (measured_first, worst_first), (measured_second, worst_second) = (model_figures(model, everything)
                                                                      for model in (0, 1))

    def both(chosen: np.ndarray) -> dict[str, tuple[float, float]]:
        a, b = model_figures(0, chosen)[0], model_figures(1, chosen)[0]
        return {name: (a[name], b[name]) for name in a}

    spread = paired_bootstrap(labels, both, draws=draws, seed=seed)
    report_figures = {name: {"champion": _finite(measured_first[name]), "challenger": _finite(measured_second[name]),
                             "difference": _finite(measured_second[name] - measured_first[name]),
                             "interval_95": spread[name]["interval"],
                             "challenger_ahead": spread[name]["second_ahead"]} for name in measured_first}
    guarded = [_source_auc(source) for source in mixed_sources] + [
        name for name in (SWAPPED_AUC, WORST_AUC) if name in report_figures]
    failures = [] if report_figures[SPLIT_AUC]["difference"] > 0 else [f"{SPLIT_AUC} does not rise"]
    failures += [f"{name} falls by {-report_figures[name]['difference']:.3f}" for name in guarded
                 if report_figures[name]["difference"] is not None
                 and report_figures[name]["difference"] < -SHIPPING_TOLERANCE]
    report = {
        "champion": f"{champion['name']}:{champion['version']}",
        "challenger": f"{challenger['name']}:{challenger['version']}",
        "data_dir": str(data_dir),
        "split": split,
        "images": int(len(labels)),
        "melanomas": int(positive.sum()),
        "draws": draws,
        "worst_change": {"champion": worst_first, "challenger": worst_second},
        "figures": report_figures,
        "shipping_rule": {
            "passes": not failures,
            "failures": failures,
            # Whether this split can tell the rise from the choice of images at all.
            "rise_beyond_resampling": bool(report_figures[SPLIT_AUC]["interval_95"][0] > 0),
        },
    }
    out_path = Path(out_path or comparison_path(champion_dir, challenger_dir))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _plot(out_dir: Path, probabilities, labels, class_names, threshold, report, history_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    melanoma = class_names.index(MELANOMA)
    scores, positive = probabilities[:, melanoma], labels == melanoma
    thresholds = np.r_[np.inf, np.sort(np.unique(scores))[::-1]]
    tpr = [(scores[positive] >= t).mean() if positive.any() else 0 for t in thresholds]
    fpr = [(scores[~positive] >= t).mean() if (~positive).any() else 0 for t in thresholds]
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot(fpr, tpr, label=f"AUC {report['overall']['melanoma_auc'] or float('nan'):.3f}")
    sensitivity = report["overall"]["melanoma_sensitivity"] or 0
    specificity = report["overall"]["melanoma_specificity"] or 0
    axis.scatter([1 - specificity], [sensitivity], color="red", label=f"alert threshold {threshold:.3f}")
    axis.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axis.set(xlabel="1 - specificity", ylabel="sensitivity", title="Melanoma ROC")
    axis.legend(loc="lower right")
    figure.savefig(out_dir / "roc.png", dpi=100, bbox_inches="tight")
    plt.close(figure)

    confusion = np.array(report["overall"]["confusion_matrix"])
    figure, axis = plt.subplots(figsize=(7, 6))
    axis.imshow(confusion, cmap="Blues")
    short = [name[:12] for name in class_names]
    axis.set_xticks(range(len(short)), short, rotation=60, ha="right")
    axis.set_yticks(range(len(short)), short)
    for (row, column), value in np.ndenumerate(confusion):
        axis.text(column, row, str(value), ha="center", va="center", fontsize=8)
    axis.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    figure.savefig(out_dir / "confusion_matrix.png", dpi=100, bbox_inches="tight")
    plt.close(figure)

    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, 11)
    centres, accuracy = [], []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            centres.append(confidence[in_bin].mean())
            accuracy.append(correct[in_bin].mean())
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axis.plot(centres, accuracy, marker="o", label=f"ECE {report['overall']['ece'] or 0:.3f}")
    axis.set(xlabel="confidence", ylabel="accuracy", title="Reliability")
    axis.legend(loc="upper left")
    figure.savefig(out_dir / "reliability.png", dpi=100, bbox_inches="tight")
    plt.close(figure)

    if history_path.is_file():
        history = json.loads(history_path.read_text())
        figure, axes = plt.subplots(1, 2, figsize=(10, 4))
        for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
            for key in (metric, f"val_{metric}"):
                if key in history:
                    axis.plot(range(1, len(history[key]) + 1), history[key], label=key)
            axis.set(xlabel="epoch", title=metric)
            axis.legend()
        figure.savefig(out_dir / "training_curves.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
