"""The pictures of an evaluation: melanoma ROC with the alert threshold, confusion matrix, reliability and the
training curves, drawn with scikit-learn's displays on matplotlib (the `train` extra)."""

import json
from pathlib import Path

import numpy as np

from worker.classifier.choices import MELANOMA


def plot_evaluation(out_dir: Path, probabilities: np.ndarray, labels: np.ndarray, class_names: list[str],
                    threshold: float, report: dict, history_path: Path) -> None:
    """roc.png, confusion_matrix.png, reliability.png and, where the model has a history, training_curves.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    overall = report["overall"]
    melanoma = class_names.index(MELANOMA)
    positive = labels == melanoma
    figure, axis = plt.subplots(figsize=(5, 5))
    if positive.any() and not positive.all():
        RocCurveDisplay.from_predictions(positive, probabilities[:, melanoma], ax=axis,
                                         name=f"AUC {overall['melanoma_auc']:.3f}", plot_chance_level=True)
    axis.scatter([1 - (overall["melanoma_specificity"] or 0)], [overall["melanoma_sensitivity"] or 0], color="red",
                 label=f"alert threshold {threshold:.3f}", zorder=3)
    axis.set(xlabel="1 - specificity", ylabel="sensitivity", title="Melanoma ROC")
    axis.legend(loc="lower right")
    _save(plt, figure, out_dir / "roc.png")

    figure, axis = plt.subplots(figsize=(7, 6))
    ConfusionMatrixDisplay(np.array(overall["confusion_matrix"]), display_labels=[name[:12] for name in class_names]
                           ).plot(ax=axis, cmap="Blues", colorbar=False, xticks_rotation=60)
    axis.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    _save(plt, figure, out_dir / "confusion_matrix.png")

    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], linestyle=":", color="grey")
    if len(set(correct)) > 1:
        accuracy, centres = calibration_curve(correct, confidence, n_bins=10)
        axis.plot(centres, accuracy, marker="o", label=f"ECE {overall['ece'] or 0:.3f}")
        axis.legend(loc="upper left")
    axis.set(xlabel="confidence", ylabel="accuracy", title="Reliability")
    _save(plt, figure, out_dir / "reliability.png")

    if history_path.is_file():
        history = json.loads(history_path.read_text())
        figure, axes = plt.subplots(1, 2, figsize=(10, 4))
        for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
            for key in (metric, f"val_{metric}"):
                if key in history:
                    axis.plot(range(1, len(history[key]) + 1), history[key], label=key)
            axis.set(xlabel="epoch", title=metric)
            axis.legend()
        _save(plt, figure, out_dir / "training_curves.png")


def _save(plt, figure, path: Path) -> None:
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
