"""How well the shift score tells a hospital whose pictures differ from the model's own: the score of many
random samples of the model's own test split (every diagnosis; only nevi and melanomas, as a clinic may send;
each source of the collection) against samples of collections it never trained on, one per source, at several
sample sizes. The flag's limit (web/reliability.py SHIFT_LIMIT) is read against these figures.

    .venv/bin/python bench/shift.py [--model-dir DIR] [--data DIR ...] [--unseen DIR ...] [--sizes 50 100 200]
        [--draws 15]

--data: the folders the model was trained on (its card's hash checks them); --unseen: folders it never saw,
grouped by the source their metadata.csv names.
"""

import argparse
from pathlib import Path

import numpy as np

from web.config import DEFAULT_MODEL_DIR
from web.reliability import SHIFT_LIMIT
from worker.classifier import data, shift
from worker.classifier.artifacts import read_card
from worker.classifier.choices import CLASS_NAMES

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--data", nargs="+", default=[str(DATASETS / "isic-9class" / "Train")])
    parser.add_argument("--unseen", nargs="+", default=[str(DATASETS / "ham10000-part")])
    parser.add_argument("--sizes", nargs="+", type=int, default=[50, 100, 200])
    parser.add_argument("--draws", type=int, default=15)
    args = parser.parse_args()

    card, artifact = read_card(args.model_dir)
    if not card.get("shift"):
        raise SystemExit(f"{args.model_dir} has no shift reference; `melanoma models reference` writes one")
    reference = shift.read_reference(args.model_dir, card["shift"])
    model = shift.load_model(artifact)
    test = shift.training_split(card, args.data).test
    unseen, _ = data.list_examples(args.unseen, CLASS_NAMES, every_class=False)
    melanoma, nevus = CLASS_NAMES.index("melanoma"), CLASS_NAMES.index("nevus")
    groups = {"own test split": test,
              "own test split, nevi and melanomas": [e for e in test if e.label in (melanoma, nevus)]}
    groups |= {f"own test split, source {source}": [e for e in test if e.source == source]
               for source in sorted({e.source for e in test})}
    groups |= {f"unseen: {source}": [e for e in unseen if e.source == source]
               for source in sorted({e.source for e in unseen})}
    print(f"{card['name']}:{card['version']}, limit {SHIFT_LIMIT:.2f}; {args.draws} random samples a size")
    print(f"{'':44s}{'images':>7s}{'size':>6s}{'min':>7s}{'median':>8s}{'max':>7s}{'flagged':>9s}")
    rng = np.random.default_rng(0)
    for name, examples in groups.items():
        rows, classes = shift.features(model, data.read_images(examples, card["input_size"]))
        for size in args.sizes:
            if size > len(examples):
                continue
            scores = np.array([reference.shift_auc(rows[chosen], classes[chosen]) for chosen in
                               (rng.choice(len(examples), size, replace=False) for _ in range(args.draws))])
            print(f"{name:44s}{len(examples):7d}{size:6d}{scores.min():7.3f}{np.median(scores):8.3f}"
                  f"{scores.max():7.3f}{np.mean(scores >= SHIFT_LIMIT):9.2f}")


if __name__ == "__main__":
    main()
