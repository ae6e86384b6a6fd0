"""Why the bootstraps keep their own melanoma AUC and balanced accuracy: milliseconds a call, ours against
scikit-learn's, on a test split's size (the bootstraps call them thousands of times per evaluation).

    .venv/bin/python bench/metrics_speed.py [--images 294] [--calls 1000]
"""

import argparse
import time

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from worker.classifier.metrics import balanced_accuracy, roc_auc


def milliseconds(function, arguments, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function(*arguments)
    return (time.perf_counter() - start) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=294)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 9, args.images), rng.integers(0, 9, args.images)
    is_melanoma, scores = labels == 3, rng.random(args.images)
    rows = [("melanoma AUC", (roc_auc, (is_melanoma, scores)), (roc_auc_score, (is_melanoma, scores))),
            ("balanced accuracy", (balanced_accuracy, (labels, predicted, 9)),
             (balanced_accuracy_score, (labels, predicted)))]
    print(f"{args.images} images, ms a call over {args.calls} calls")
    print(f"{'':20s}{'ours':>8s}{'sklearn':>9s}")
    for name, ours, theirs in rows:
        print(f"{name:20s}{milliseconds(*ours, args.calls):>8.3f}{milliseconds(*theirs, args.calls):>9.3f}")


if __name__ == "__main__":
    main()
