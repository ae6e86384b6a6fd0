"""The metrics on hand-computed cases: AUC, balanced accuracy, the threshold rule, the bootstraps, calibration."""


import numpy as np
import pytest

from worker.classifier.metrics import (
    balanced_accuracy,
    bootstrap_intervals,
    paired_bootstrap,
    per_source_alerts,
    roc_auc,
    sensitivity_specificity,
    threshold_for_every_source,
    threshold_for_sensitivity,
)


def test_roc_auc_matches_hand_computed_values():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([1, 1, 0]), np.array([0.9, 0.8, 0.1])) == pytest.approx(1.0)
    # Against every melanoma-benign pair counted one by one, on scores with many ties.
    rng = np.random.default_rng(5)
    for _ in range(20):
        labels = rng.random(60) < 0.3
        labels[:2] = True, False
        scores = np.round(rng.random(60), 1)
        pairs = scores[labels][:, None] - scores[~labels][None, :]
        assert roc_auc(labels, scores) == pytest.approx(np.mean((pairs > 0) + 0.5 * (pairs == 0)))


def test_balanced_accuracy_is_the_mean_recall_per_class():
    labels = np.array([0, 0, 0, 0, 1, 1])
    predicted = np.array([0, 0, 0, 1, 1, 0])
    assert balanced_accuracy(labels, predicted, 3) == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_threshold_reaches_the_requested_sensitivity_on_a_known_distribution():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(200), np.zeros(800)]
    scores = np.r_[rng.normal(0.7, 0.15, 200), rng.normal(0.3, 0.15, 800)]
    for target in (0.8, 0.9, 0.95):
        threshold = threshold_for_sensitivity(labels, scores, target)
        sensitivity, specificity = sensitivity_specificity(labels, scores, threshold)
        assert target <= sensitivity < target + 1 / 200 + 1e-9
        assert 0 < specificity < 1
    with pytest.raises(ValueError, match="no positive"):
        threshold_for_sensitivity(np.zeros(3), np.ones(3), 0.9)


def test_threshold_keeps_a_margin_so_rounding_loses_no_melanoma_it_was_set_to_keep():
    labels = np.array([1, 1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.6, 0.2, 0.5, 0.3, 0.1])
    threshold = threshold_for_sensitivity(labels, scores, 0.75)  # keeps three of four: 0.6 is the last one
    assert threshold == pytest.approx(0.55)  # halfway to the next lower score, a benign lesion's 0.5
    rounded = scores - 1e-5  # another runtime's probabilities, a little lower
    assert sensitivity_specificity(labels, rounded, threshold) == (0.75, 1.0)
    # Where the next lower score is closer than the tolerance, the melanoma keeps its margin.
    close = np.array([0.9, 0.8, 0.6, 0.2, 0.59998, 0.3, 0.1])
    assert threshold_for_sensitivity(labels, close, 0.75) == pytest.approx(0.6 - 1e-4)
    assert threshold_for_sensitivity(np.array([1]), np.array([0.00005]), 1.0) == 0.0


def _three_class_scores(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 plays melanoma: its probability is higher, on average, where it is the true class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], per_class)
    logits = rng.normal(0.0, 1.0, (len(labels), 3))
    logits[np.arange(len(labels)), labels] += 1.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities


def test_bootstrap_intervals_hold_the_measured_figure_and_narrow_with_more_images():
    labels, probabilities = _three_class_scores(30, seed=1)
    intervals = bootstrap_intervals(labels, probabilities, 1, threshold=0.4, draws=500)
    positive = labels == 1
    sensitivity, specificity = sensitivity_specificity(positive, probabilities[:, 1], 0.4)
    measured = {"melanoma_auc": roc_auc(positive, probabilities[:, 1]), "melanoma_sensitivity": sensitivity,
                "melanoma_specificity": specificity,
                "balanced_accuracy": balanced_accuracy(labels, probabilities.argmax(axis=1), 3)}
    assert set(intervals) == set(measured)
    for name, value in measured.items():
        low, high = intervals[name]
        assert low <= value <= high and high - low > 0.02
    # Nine times the images: the intervals narrow about three times.
    many_labels, many_probabilities = _three_class_scores(270, seed=2)
    narrow = bootstrap_intervals(many_labels, many_probabilities, 1, threshold=0.4, draws=500)
    for name, (low, high) in intervals.items():
        assert narrow[name][1] - narrow[name][0] < (high - low) / 2
    assert bootstrap_intervals(labels, probabilities, 1, 0.3, draws=50, seed=7) == \
        bootstrap_intervals(labels, probabilities, 1, 0.3, draws=50, seed=7)


def test_bootstrap_intervals_on_hand_computed_cases():
    # Two melanomas, one above the threshold: a draw holds it twice, once or not at all (1/4, 1/2, 1/4), so
    # the sensitivity's 95 % interval runs from 0 to 1. Every draw ranks the melanomas over the benign lesions.
    labels = np.array([1, 1, 0, 0, 0])
    probabilities = np.array([[0.1, 0.9], [0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]])
    intervals = bootstrap_intervals(labels, probabilities, 1, threshold=0.5, draws=400)
    assert intervals["melanoma_sensitivity"] == [0.0, 1.0]
    assert intervals["melanoma_auc"] == [1.0, 1.0] and intervals["melanoma_specificity"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals(labels, probabilities, 1, 0.5, level=95)


def test_paired_bootstrap_cancels_what_two_models_share_and_finds_a_real_difference():
    labels, probabilities = _three_class_scores(30, seed=3)
    positive = labels == 1
    noisy = probabilities[:, 1]
    better = noisy + 0.5 * positive  # the same scores, melanomas lifted: ranked better on every resampling

    def statistic(chosen):
        return {"auc": (roc_auc(positive[chosen], noisy[chosen]), roc_auc(positive[chosen], better[chosen])),
                "same": (roc_auc(positive[chosen], noisy[chosen]), roc_auc(positive[chosen], noisy[chosen]))}

    spread = paired_bootstrap(labels, statistic, draws=300)
    assert spread["same"] == {"interval": [0.0, 0.0], "second_ahead": 0.0}
    low, high = spread["auc"]["interval"]
    assert 0.0 < low < roc_auc(positive, better) - roc_auc(positive, noisy) < high
    assert spread["auc"]["second_ahead"] == 1.0
    # Each model alone spreads wider than their difference does: the images they share cancel out.
    alone = bootstrap_intervals(labels, probabilities, 1, threshold=0.5, draws=300)["melanoma_auc"]
    assert high - low < alone[1] - alone[0]


def test_paired_bootstrap_on_a_hand_computed_case():
    # Two melanomas, one benign lesion. The first model ranks melanoma 0 above the benign lesion and
    # melanoma 1 below it; the second ranks both above. Resampled within class, the melanomas come out as
    # {0, 0}, {0, 1} (twice as likely) or {1, 1}: AUC 1, 0.5, 0 for the first, 1 for the second, so the
    # difference is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4 and the second is ahead three times in four.
    labels = np.array([1, 1, 0])
    first, second = np.array([0.9, 0.1, 0.5]), np.array([0.9, 0.8, 0.5])

    def statistic(chosen):
        return {"auc": (roc_auc(labels[chosen] == 1, first[chosen]), roc_auc(labels[chosen] == 1, second[chosen])),
                "undefined": (float("nan"), 0.0)}

    spread = paired_bootstrap(labels, statistic, draws=4000)
    assert spread["auc"]["interval"] == [0.0, 1.0]
    assert spread["auc"]["second_ahead"] == pytest.approx(0.75, abs=0.03)
    assert spread["undefined"] == {"interval": None, "second_ahead": None}


def test_expected_calibration_error_on_a_hand_computed_case():
    from worker.classifier.metrics import expected_calibration_error

    # Two bins: confidence 0.9 with 1 of 2 right (gap 0.4), confidence 0.6 with 2 of 2 right (gap 0.4).
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probabilities, labels, bins=10) == pytest.approx(0.4)


def test_temperature_scaling_recovers_a_known_overconfidence():
    from worker.classifier.metrics import apply_temperature, expected_calibration_error, fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (4000, 3))
    labels = np.array([rng.choice(3, p=np.exp(row) / np.exp(row).sum()) for row in logits])
    overconfident = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    calibrated = apply_temperature(overconfident, temperature)
    assert expected_calibration_error(calibrated, labels) < expected_calibration_error(overconfident, labels) / 3


def test_auc_and_balanced_accuracy_equal_scikit_learns_and_figures_build_every_figure():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from worker.classifier.choices import CLASS_NAMES
    from worker.classifier.metrics import figures

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 9, 400)
    probabilities = rng.dirichlet(np.ones(9), 400)
    probabilities[:, 3] = np.round(probabilities[:, 3], 2)  # ties, which count one half
    is_melanoma = labels == 3
    assert roc_auc(is_melanoma, probabilities[:, 3]) == pytest.approx(roc_auc_score(is_melanoma, probabilities[:, 3]))
    predicted = probabilities.argmax(axis=1)
    assert balanced_accuracy(labels, predicted, 9) == pytest.approx(balanced_accuracy_score(labels, predicted))
    result = figures(probabilities, labels, CLASS_NAMES, threshold=0.2)
    assert result["melanoma_auc"] == pytest.approx(roc_auc_score(is_melanoma, probabilities[:, 3]))
    confusion = np.array(result["confusion_matrix"])
    assert confusion.sum() == 400 and confusion.trace() == (predicted == labels).sum()
    melanoma = result["per_class"]["melanoma"]
    assert melanoma["support"] == is_melanoma.sum()
    assert melanoma["recall"] == pytest.approx((predicted[is_melanoma] == 3).mean())
    # Figures these images leave undefined are None (JSON's null), not NaN.
    benign = figures(probabilities[~is_melanoma], labels[~is_melanoma], CLASS_NAMES, threshold=0.2)
    assert benign["melanoma_auc"] is None and benign["melanoma_sensitivity"] is None
    assert benign["per_class"]["melanoma"]["recall"] is None


def test_the_threshold_for_every_source_lets_no_source_fall_under_the_target():
    # Source b's melanomas score lower than a's: the pooled threshold for 0.75 keeps a's four and misses b's two.
    labels = np.array([1, 1, 1, 1, 0, 0, 1, 1, 0, 0])
    scores = np.array([0.9, 0.85, 0.8, 0.75, 0.3, 0.2, 0.5, 0.4, 0.1, 0.05])
    sources = np.array(["a"] * 6 + ["b"] * 4)
    pooled = threshold_for_sensitivity(labels, scores, 0.75)
    assert sensitivity_specificity(labels[sources == "b"], scores[sources == "b"], pooled)[0] < 0.75
    threshold = threshold_for_every_source(labels, scores, sources, 0.75)
    report = per_source_alerts(labels, scores, sources, threshold)
    assert report["a"]["sensitivity"] == 1.0 and report["b"]["sensitivity"] >= 0.75
    assert report["b"] == {"images": 4, "melanomas": 2, "sensitivity": 1.0, "specificity": 1.0}
    # A source without melanomas sets nothing: the threshold is that of the rest.
    assert threshold_for_every_source(labels, scores, np.array(["a"] * 9 + ["c"]), 0.75) == pooled
