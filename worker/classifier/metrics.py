"""The figures a model is judged by. scikit-learn gives the confusion matrix and the per-class precision and
recall; what it lacks is here: the alert threshold rule, the calibration error, temperature scaling and the
stratified bootstrap. The melanoma AUC and the balanced accuracy are computed here by plain numpy: the
bootstraps call them thousands of times, where scikit-learn's (equal to them: tests/worker/classifier) are
an order of magnitude slower a call (docs/benchmarks.md)."""

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from worker.classifier.choices import MELANOMA


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve for binary labels, by the rank-sum formula (ties count one half)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    # Each score's rank, the mean of the ranks its ties share.
    _, tie_group, tie_counts = np.unique(scores, return_inverse=True, return_counts=True)
    last_ranks = np.cumsum(tie_counts)
    ranks = ((last_ranks - tie_counts + 1 + last_ranks) / 2.0)[tie_group]
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Mean per-class recall over the classes present in labels."""
    recalls = [np.mean(predicted[labels == c] == c) for c in range(num_classes) if np.any(labels == c)]
    return float(np.mean(recalls))


def threshold_for_sensitivity(labels: np.ndarray, scores: np.ndarray, target: float,
                              tolerance: float = 1e-4) -> float:
    """A threshold whose sensitivity (scores >= threshold among positives) reaches target, as high as that
    allows: halfway between the last positive it must keep and the next lower score, and at least tolerance
    below that positive. On the threshold itself a positive would be lost to any rounding difference between
    runtimes (LiteRT agrees with Keras within 1e-4), so the stored threshold keeps a margin."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    scores = np.asarray(scores, dtype=float)
    positive_scores = np.sort(scores[np.asarray(labels).astype(bool)])[::-1]
    if len(positive_scores) == 0:
        raise ValueError("no positive examples: cannot choose a threshold for sensitivity")
    needed = int(np.ceil(target * len(positive_scores)))
    kept = positive_scores[needed - 1]
    lower = scores[scores < kept]
    halfway = (kept + lower.max()) / 2 if lower.size else kept
    return float(max(0.0, min(halfway, kept - tolerance)))


def threshold_for_every_source(labels: np.ndarray, scores: np.ndarray, sources: np.ndarray, target: float) -> float:
    """The highest threshold at which the positives of every source, as well as all of them together, reach the
    target sensitivity: the lowest of their own thresholds. A source without positives sets none."""
    labels, sources = np.asarray(labels).astype(bool), np.asarray(sources)
    return min([threshold_for_sensitivity(labels, scores, target)]
               + [threshold_for_sensitivity(labels[sources == source], np.asarray(scores)[sources == source], target)
                  for source in sorted(set(sources[labels]))])


def per_source_alerts(labels: np.ndarray, scores: np.ndarray, sources: np.ndarray, threshold: float) -> dict:
    """Each source's images, positives, and sensitivity and specificity at the threshold (None without any)."""
    labels, scores, sources = np.asarray(labels).astype(bool), np.asarray(scores), np.asarray(sources)
    report = {}
    for source in sorted(set(sources)):
        positive, alerted = labels[sources == source], scores[sources == source] >= threshold
        report[str(source)] = {
            "images": int(len(positive)), "melanomas": int(positive.sum()),
            "sensitivity": float(alerted[positive].mean()) if positive.any() else None,
            "specificity": float((~alerted[~positive]).mean()) if (~positive).any() else None}
    return report


def sensitivity_specificity(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    labels = np.asarray(labels).astype(bool)
    alerts = np.asarray(scores) >= threshold
    sensitivity = float(alerts[labels].mean()) if labels.any() else float("nan")
    specificity = float((~alerts[~labels]).mean()) if (~labels).any() else float("nan")
    return sensitivity, specificity


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class confidence: the bin-weighted gap between confidence and accuracy."""
    probabilities = np.asarray(probabilities, dtype=float)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            error += in_bin.mean() * abs(confidence[in_bin].mean() - correct[in_bin].mean())
    return float(error)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(log(p) / T) (temperature scaling).

    Searched on a log grid then refined, since the NLL is smooth and one-dimensional in T.
    """
    log_probabilities = np.log(np.clip(np.asarray(probabilities, dtype=float), 1e-12, 1.0))
    labels = np.asarray(labels)

    def nll(temperature: float) -> float:
        scaled = log_probabilities / temperature
        scaled -= scaled.max(axis=1, keepdims=True)
        log_normalised = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
        return float(-log_normalised[np.arange(len(labels)), labels].mean())

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 200))
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = np.linspace(best * 0.95, best * 1.05, 101)
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    scaled = np.log(np.clip(np.asarray(probabilities, dtype=float), 1e-12, 1.0)) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exponentials = np.exp(scaled)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def stratified_resamples(labels: np.ndarray, draws: int, seed: int = 0):
    """`draws` resamplings, with replacement, of the indices of labels, each within each true class, so each
    keeps the class counts (a test split's 54 melanomas stay 54)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(draws):
        yield np.concatenate([rng.choice(members, size=len(members)) for members in by_class])


def percentile_interval(values, level: float) -> list[float]:
    """The central `level` share of values (NaNs left out), as [low, high]."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1.0 - level) / 2.0 * 100.0
    return [float(np.nanpercentile(values, tail)), float(np.nanpercentile(values, 100.0 - tail))]


def bootstrap_intervals(labels: np.ndarray, probabilities: np.ndarray, melanoma: int, threshold: float,
                        draws: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, list[float]]:
    """Percentile intervals, over `draws` stratified resamplings of the images, for the melanoma AUC,
    sensitivity and specificity at the threshold (melanoma: its class index) and for balanced accuracy: how far
    a figure measured on these few images could lie from the model's own."""
    percentile_interval([0.0], level)  # refuse a bad level before the draws
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=float)
    num_classes = probabilities.shape[1]
    samples: dict[str, list[float]] = {"melanoma_auc": [], "melanoma_sensitivity": [], "melanoma_specificity": [],
                                       "balanced_accuracy": []}
    for chosen in stratified_resamples(labels, draws, seed):
        drawn_labels, drawn = labels[chosen], probabilities[chosen]
        positive = drawn_labels == melanoma
        sensitivity, specificity = sensitivity_specificity(positive, drawn[:, melanoma], threshold)
        samples["melanoma_auc"].append(roc_auc(positive, drawn[:, melanoma]))
        samples["melanoma_sensitivity"].append(sensitivity)
        samples["melanoma_specificity"].append(specificity)
        samples["balanced_accuracy"].append(balanced_accuracy(drawn_labels, drawn.argmax(axis=1), num_classes))
    return {name: percentile_interval(values, level) for name, values in samples.items()
            if not np.isnan(values).any()}


def paired_bootstrap(labels: np.ndarray, statistic, draws: int = 2000, level: float = 0.95,
                     seed: int = 0) -> dict[str, dict]:
    """How two models' figures on the same images differ, beyond what the choice of images gives.

    statistic(indices) returns {figure: (first model's value, second's)} on those images; both models are
    scored on the same stratified resampling each draw, so what the images share cancels out. Returns, for
    each figure, the interval of the second's value minus the first's and the share of draws where the
    second is ahead (draws where a figure is undefined, NaN, are left out of that figure)."""
    percentile_interval([0.0], level)
    differences: dict[str, list[float]] = {}
    for chosen in stratified_resamples(labels, draws, seed):
        for name, (first, second) in statistic(chosen).items():
            differences.setdefault(name, []).append(second - first)
    result = {}
    for name, values in differences.items():
        values = np.asarray(values, dtype=float)
        defined = values[~np.isnan(values)]
        result[name] = {"interval": percentile_interval(defined, level) if defined.size else None,
                        "second_ahead": float(np.mean(defined > 0)) if defined.size else None}
    return result


def finite(value: float | None) -> float | None:
    """The value as JSON can hold it: None where it is undefined (NaN)."""
    return None if value is None or np.isnan(value) else float(value)


def figures(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str] | tuple[str, ...],
            threshold: float) -> dict:
    """Every figure of a model on some images (one row of probabilities and one label each): accuracy, balanced
    accuracy, per-class precision/recall, confusion matrix, melanoma AUC, sensitivity and specificity at the
    alert threshold, and expected calibration error; None for what these images leave undefined."""
    labels = np.asarray(labels)
    melanoma = list(class_names).index(MELANOMA)
    predicted = probabilities.argmax(axis=1) if len(labels) else labels
    classes = list(range(len(class_names)))
    confusion = confusion_matrix(labels, predicted, labels=classes)
    precision, recall, _, support = precision_recall_fscore_support(labels, predicted, labels=classes,
                                                                    zero_division=np.nan)
    per_class = {name: {"support": int(support[index]), "precision": finite(precision[index]),
                        "recall": finite(recall[index])} for index, name in enumerate(class_names)}
    is_melanoma = labels == melanoma
    scores = probabilities[:, melanoma] if len(labels) else np.zeros(0)
    sensitivity, specificity = sensitivity_specificity(is_melanoma, scores, threshold)
    return {
        "images": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)) if len(labels) else None,
        "balanced_accuracy": balanced_accuracy(labels, predicted, len(class_names)) if len(labels) else None,
        "melanoma_auc": finite(roc_auc(is_melanoma, scores)),
        "melanoma_sensitivity": finite(sensitivity),
        "melanoma_specificity": finite(specificity),
        "ece": expected_calibration_error(probabilities, labels) if len(labels) else None,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }
