"""`melanoma compare`: should a challenger replace the champion? Both models scored on the same images, each
figure's difference with its paired-bootstrap interval, and the verdict of the shipping rule."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from worker.classifier.artifacts import EVALUATION_DIR
from worker.classifier.audit import DataDirs, data_folders
from worker.classifier.choices import MELANOMA
from worker.classifier.evaluation import held_out_examples, split_data_sha256
from worker.classifier.images import decode_image
from worker.classifier.metrics import balanced_accuracy, finite, paired_bootstrap, roc_auc, sensitivity_specificity
from worker.classifier.perturbations import PERTURBATIONS, as_arrays, swap_sources
from worker.classifier.predictor import load_classifier

# What `compare` reports, in its order; the melanoma AUCs inside each source holding both melanomas and other
# lesions come after the first.
SPLIT_AUC, SWAPPED_AUC, WORST_AUC = "melanoma AUC", "melanoma AUC, colours swapped", "melanoma AUC, worst change"
SHIPPING_TOLERANCE = 0.01


def _source_auc(source: str) -> str:
    return f"melanoma AUC inside {source}"


def comparison_path(champion_dir: str | Path, challenger_dir: str | Path) -> Path:
    """Where `compare` writes its JSON unless told: beside the challenger's evaluation."""
    return Path(challenger_dir) / EVALUATION_DIR / f"compared-with-{Path(champion_dir).resolve().name}.json"


def compare(champion_dir: str | Path, challenger_dir: str | Path, data_dirs: DataDirs, split: str = "test",
            draws: int = 2000, seed: int = 0, out_path: str | Path | None = None, runtime: str = "auto",
            cache_dir: str | Path | None = None) -> dict:
    """Both models scored on the same images, untouched, under each simulated acquisition change and with the
    sources' colours swapped, and the difference of each figure with the interval a paired bootstrap gives
    it; written as JSON to out_path (default `comparison_path`), with the verdict of `shipping_rule`. runtime
    and cache_dir: how the models run (predictor.Classifier)."""
    (champion, first), (challenger, second) = (load_classifier(model_dir, runtime=runtime, cache_dir=cache_dir)
                                               for model_dir in (champion_dir, challenger_dir))
    class_names = champion["class_names"]
    if challenger["class_names"] != class_names:
        raise ValueError("the two models name different classes, so their figures do not compare")
    examples = held_out_examples(champion, data_dirs, split)
    # The same data and seed give the same split; the champion's data was checked against DATA_DIR above.
    if split == "test" and split_data_sha256(challenger) != split_data_sha256(champion):
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
    report_figures = {name: {"champion": finite(measured_first[name]), "challenger": finite(measured_second[name]),
                             "difference": finite(measured_second[name] - measured_first[name]),
                             "interval_95": spread[name]["interval"],
                             "challenger_ahead": spread[name]["second_ahead"]} for name in measured_first}
    report = {
        "champion": f"{champion['name']}:{champion['version']}",
        "challenger": f"{challenger['name']}:{challenger['version']}",
        "data_dir": ", ".join(map(str, data_folders(data_dirs))),
        "split": split,
        "images": int(len(labels)),
        "melanomas": int(positive.sum()),
        "draws": draws,
        "worst_change": {"champion": worst_first, "challenger": worst_second},
        "figures": report_figures,
        "shipping_rule": shipping_rule(report_figures, mixed_sources),
    }
    out_path = Path(out_path or comparison_path(champion_dir, challenger_dir))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def shipping_rule(report_figures: dict[str, dict], mixed_sources: list[str]) -> dict:
    """The challenger replaces the champion only if the melanoma AUC rises on these images and, inside each
    source (holding melanomas and other lesions), with colours swapped and under the worst change, it loses at
    most SHIPPING_TOLERANCE (docs/trials.md tells why)."""
    guarded = [_source_auc(source) for source in mixed_sources] + [
        name for name in (SWAPPED_AUC, WORST_AUC) if name in report_figures]
    failures = [] if report_figures[SPLIT_AUC]["difference"] > 0 else [f"{SPLIT_AUC} does not rise"]
    failures += [f"{name} falls by {-report_figures[name]['difference']:.3f}" for name in guarded
                 if report_figures[name]["difference"] is not None
                 and report_figures[name]["difference"] < -SHIPPING_TOLERANCE]
    return {
        "passes": not failures,
        "failures": failures,
        # Whether these images can tell the rise from the choice of images at all.
        "rise_beyond_resampling": bool(report_figures[SPLIT_AUC]["interval_95"][0] > 0),
    }


def compare_groups(champion_dir: str | Path, challenger_dir: str | Path, groups: dict[str, list[tuple[bytes, str]]],
                   draws: int = 2000, seed: int = 0, runtime: str = "auto",
                   cache_dir: str | Path | None = None) -> dict[str, dict]:
    """Both models on each group's pictures (a hospital's held-back confirmed images: (image bytes, class name)
    each): the counts, each model's melanoma AUC and sensitivity and specificity at its own threshold, and the
    AUC's difference with its paired-bootstrap interval (None where the group lacks melanomas or others)."""
    models = [load_classifier(model_dir, runtime=runtime, cache_dir=cache_dir)
              for model_dir in (champion_dir, challenger_dir)]
    return {name: _group_figures(models, rows, draws, seed) for name, rows in groups.items()}


def _group_figures(models: list, rows: list[tuple[bytes, str]], draws: int, seed: int) -> dict:
    positive = np.array([label == MELANOMA for _, label in rows])
    scores = [classifier.predict([decode_image(data, classifier.input_size) for data, _ in rows])
              [:, card["class_names"].index(MELANOMA)] for card, classifier in models]

    def measured(chosen: np.ndarray) -> dict[str, tuple[float, float]]:
        return {SPLIT_AUC: tuple(roc_auc(positive[chosen], model_scores[chosen]) for model_scores in scores)}

    result = {"images": len(rows), "melanomas": int(positive.sum())}
    for role, (card, _), model_scores in zip(("champion", "challenger"), models, scores, strict=True):
        sensitivity, specificity = sensitivity_specificity(positive, model_scores, card["alert_threshold"])
        result[role] = {SPLIT_AUC: finite(roc_auc(positive, model_scores)),
                        "sensitivity at its threshold": finite(sensitivity),
                        "specificity at its threshold": finite(specificity)}
    mixed = bool(positive.any() and not positive.all())
    result["melanoma_auc_difference"] = (result["challenger"][SPLIT_AUC] - result["champion"][SPLIT_AUC]
                                         if mixed else None)
    result["interval_95"] = (paired_bootstrap(positive.astype(int), measured, draws=draws, seed=seed)
                             [SPLIT_AUC]["interval"] if mixed else None)
    return result
