"""Leave one source out with frozen ImageNet features: how well a linear head on EfficientNet-Lite features
that never saw a dermoscopic picture ranks the melanomas of a source it was not fitted on.

A quick probe of a direction before any training run (minutes, not the 16-20 of a fine-tuned
`bench/cross_source.py` fold): features are computed once per preprocessing, and each fold fits a logistic
regression over the 9 classes on every other source's images and scores the held-out source's.

    python bench/frozen_features.py ../shared/datasets/isic-9class/Train ../shared/datasets/ham10000-part \\
        [--backbone efficientnet_lite0] [--input-size 192] [--colour field-standardise] [--balance-sources]

Prints, for each source with melanomas held out, its melanoma AUC with a 95 % interval (stratified resamplings),
and the sensitivity and specificity at the threshold that keeps 0.90 of the training sources' melanomas.
"""

import argparse
import time

import numpy as np


def features(examples, backbone: str, input_size: int, colour: str) -> np.ndarray:
    import keras

    from worker.classifier import data
    from worker.classifier.backbones import imagenet_weights_file, load_imagenet_weights
    from worker.classifier.network import make_model
    from worker.classifier.torch_legacy import load_state_dict

    model = make_model(input_size=input_size, backbone=backbone, colour=colour)
    load_imagenet_weights(model.get_layer(backbone), load_state_dict(imagenet_weights_file(backbone)))
    extractor = keras.Model(model.inputs, model.get_layer("dropout").input)  # the pooled backbone features
    rows = []
    for start in range(0, len(examples), 256):
        images = data.read_images(examples[start:start + 256], input_size).astype(np.float32)
        rows.append(extractor.predict(images, batch_size=64, verbose=0))
    return np.concatenate(rows)


def source_weights(labels: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Every class weighs the same in all, and within a class every source weighs the same."""
    weights = np.zeros(len(labels))
    classes = np.unique(labels)
    for label in classes:
        in_class = labels == label
        present = np.unique(sources[in_class])
        for source in present:
            cell = in_class & (sources == source)
            weights[cell] = 1.0 / (len(classes) * len(present) * cell.sum())
    return weights * len(labels)


def auc_interval(truth: np.ndarray, scores: np.ndarray, resamples: int = 2000, seed: int = 0):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(truth), np.flatnonzero(~truth)
    draws = []
    for _ in range(resamples):
        chosen = np.concatenate([rng.choice(positives, len(positives)), rng.choice(negatives, len(negatives))])
        draws.append(roc_auc_score(truth[chosen], scores[chosen]))
    return roc_auc_score(truth, scores), np.percentile(draws, 2.5), np.percentile(draws, 97.5)


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from worker.classifier.choices import CLASS_NAMES, MELANOMA
    from worker.classifier.data import list_examples

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dirs", nargs="+")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--input-size", type=int, default=192)
    parser.add_argument("--colour", default="field-standardise")
    parser.add_argument("--balance-sources", action="store_true",
                        help="weigh every source alike within each class, instead of every class alike")
    parser.add_argument("--C", type=float, default=0.1, help="inverse regularisation of the head")
    args = parser.parse_args()

    examples, _ = list_examples(args.data_dirs, CLASS_NAMES, every_class=False)
    started = time.perf_counter()
    x = features(examples, args.backbone, args.input_size, args.colour)
    print(f"{len(examples)} images, features in {time.perf_counter() - started:.0f} s", flush=True)
    labels = np.array([example.label for example in examples])
    sources = np.array([example.source for example in examples])
    melanoma = CLASS_NAMES.index(MELANOMA)
    print("| left out | images | melanomas | melanoma AUC [95 %] | sensitivity | specificity |")
    print("| --- | --- | --- | --- | --- | --- |")
    for held_out in sorted(set(sources[labels == melanoma])):
        test = sources == held_out
        train = ~test
        if args.balance_sources:
            weights = source_weights(labels[train], sources[train])
        else:
            counts = np.bincount(labels[train], minlength=len(CLASS_NAMES))
            weights = len(labels[train]) / (len(CLASS_NAMES) * counts[labels[train]])
        scaler = StandardScaler().fit(x[train])
        head = LogisticRegression(C=args.C, max_iter=3000).fit(scaler.transform(x[train]), labels[train],
                                                               sample_weight=weights)
        column = list(head.classes_).index(melanoma)
        train_scores = head.predict_proba(scaler.transform(x[train]))[:, column]
        threshold = np.quantile(train_scores[labels[train] == melanoma], 0.10)
        scores = head.predict_proba(scaler.transform(x[test]))[:, column]
        truth = labels[test] == melanoma
        auc, low, high = auc_interval(truth, scores)
        alerts = scores >= threshold
        print(f"| {held_out} | {test.sum()} | {truth.sum()} | {auc:.3f} [{low:.2f}, {high:.2f}] | "
              f"{alerts[truth].mean():.3f} | {1 - alerts[~truth].mean():.3f} |", flush=True)


if __name__ == "__main__":
    main()
