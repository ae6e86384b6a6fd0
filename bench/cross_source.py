"""Leave one source out: the best estimate of a hospital the model never saw that this data allows. For each
source with melanomas, a model is trained on every other source (the recipe of `melanoma train`, audited over
all folders, so a copy of a held-out picture elsewhere is left out too) and scored on every image of the source
it never saw: melanoma AUC, and sensitivity and specificity at the threshold it stored, each with its 95 %
interval (2,000 stratified resamplings).

    .venv/bin/python bench/cross_source.py DATA_DIR [DATA_DIR ...] [--sources S ...] [--out DIR]
        [--backbone B] [--epochs N] [--input-size N] [--colour C] [--source-adversary W] [--field F] [--seed N]

Without --sources, every source that holds melanomas is left out in turn. Each model stays in OUT/<source>, and
OUT/cross_source.json holds the figures. A full run trains one model a source (19-21 minutes each on 2
cores with the Lite0 recipe, about an hour for the three sources with melanomas).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from worker.classifier import data
from worker.classifier.choices import BACKBONES, CLASS_NAMES, COLOUR_NORMALISATIONS, MELANOMA
from worker.classifier.metrics import bootstrap_intervals, figures
from worker.classifier.predictor import load_classifier
from worker.classifier.training import recipe_defaults, train

ROOT = Path(__file__).resolve().parent.parent


def held_out_figures(model_dir: Path, examples: list[data.Example]) -> dict:
    """The model's figures on these images, with 95 % intervals."""
    card, classifier = load_classifier(model_dir, runtime="keras")
    pictures = data.read_images(examples, card["input_size"])
    probabilities = classifier.predict(list(pictures))
    labels = np.array([example.label for example in examples])
    threshold = card["alert_threshold"]
    report = figures(probabilities, labels, CLASS_NAMES, threshold)
    report["melanomas"] = int(np.sum(labels == CLASS_NAMES.index(MELANOMA)))
    report["intervals_95"] = bootstrap_intervals(labels, probabilities, CLASS_NAMES.index(MELANOMA), threshold)
    report["alert_threshold"] = threshold
    return report


def _cell(report: dict, key: str) -> str:
    """A figure with its interval, 17 characters wide."""
    value, interval = report[key], report["intervals_95"].get(key)
    if value is None:
        return f"{'-':>17s}"
    return f"{value:6.3f}" + (f" [{interval[0]:.2f},{interval[1]:.2f}]" if interval else " " * 12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dirs", nargs="+")
    parser.add_argument("--sources", nargs="+", help="the sources to leave out (default: every one with melanomas)")
    parser.add_argument("--out", type=Path, default=ROOT / "instance" / "cross-source")
    parser.add_argument("--backbone", choices=BACKBONES, default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--colour", choices=COLOUR_NORMALISATIONS, help="colour normalisation (default: the recipe's)")
    parser.add_argument("--source-adversary", type=float, metavar="WEIGHT",
                        help="gradient reversal weight of a source adversary (default: the recipe's)")
    parser.add_argument("--field", type=float, metavar="FRACTION",
                        help="the share of each side, around the centre, the network looks at (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    examples, _ = data.list_examples(args.data_dirs, CLASS_NAMES, every_class=False)
    melanoma = CLASS_NAMES.index(MELANOMA)
    sources = args.sources or sorted({e.source for e in examples if e.label == melanoma})
    recipe = recipe_defaults(args.backbone, epochs=args.epochs, input_size=args.input_size,
                             colour=args.colour, source_adversary=args.source_adversary, field=args.field)
    results_path = args.out / "cross_source.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for source in sources:
        model_dir = args.out / source.replace("/", "_").replace(" ", "_")
        if not (model_dir / "card.json").is_file():
            started = time.monotonic()
            train(args.data_dirs, model_dir, seed=args.seed, backbone=args.backbone, exclude_sources={source},
                  verbose=0, **recipe)
            print(f"{source}: trained without it in {time.monotonic() - started:.0f} s", flush=True)
        held_out = [e for e in examples if e.source == source]
        results[source] = held_out_figures(model_dir, held_out)
        args.out.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'left out':24s}{'images':>7s}{'mel.':>6s}{'mel.AUC':>17s}{'sensitivity':>17s}{'specificity':>17s}")
    for source in sources:
        report = results[source]
        print(f"{source:24s}{report['images']:7d}{report['melanomas']:6d}"
              + "".join(_cell(report, key) for key in ("melanoma_auc", "melanoma_sensitivity", "melanoma_specificity")))
    print(f"figures written to {results_path}")


if __name__ == "__main__":
    main()
