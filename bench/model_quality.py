"""Train the common assignment CNN and the project's model on the same audited split; print them side by side.

    .venv/bin/python bench/model_quality.py [--data DIR [DIR ...]] [--out DIR] [--baseline-epochs 20] [--epochs 18]

Both are judged on the same held-out test split (the project's audit, split and seed), with the alert
threshold chosen on validation for 0.90 melanoma sensitivity. Inference speed is images a second for
batches of 64 on this machine's cores, network alone, through TensorFlow (one traced graph per model) and
through LiteRT (the runtime a CPU worker serves with, worker/classifier/litert.py).
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers
from PIL import Image

from worker.classifier import data, litert
from worker.classifier.artifacts import read_card
from worker.classifier.audit import ARCHIVE
from worker.classifier.choices import CLASS_NAMES, MELANOMA
from worker.classifier.metrics import figures, roc_auc, threshold_for_sensitivity
from worker.classifier.perturbations import PERTURBATIONS, as_arrays, swap_sources
from worker.classifier.predictor import Classifier, compiled_forward
from worker.classifier.training import recipe_defaults, train

ROOT = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("MELANOMA_SHARED", ROOT.parent / "shared")) / "datasets"
DATA_DIRS = [DATASETS / "isic-9class" / "Train", DATASETS / "ham10000-part"]
SEED = 0


def assignment_cnn(input_size: int = 180) -> keras.Model:
    """The widely copied course CNN: Rescaling, Conv2D 32/64/128 (3x3) with max pooling, Dropout, Flatten,
    Dense 128, Dense 9."""
    return keras.Sequential([
        keras.Input((input_size, input_size, 3)),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(128, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Dropout(0.2), layers.Flatten(),
        layers.Dense(128, activation="relu"), layers.Dense(len(CLASS_NAMES), activation="softmax"),
    ], name="assignment_cnn")


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds an image through the convolutions and dense layers (nested models included): the
    arithmetic that bounds speed on a CPU. Preprocessing, pooling and activations are not counted."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, layers.DepthwiseConv2D):
            height, width, channels = layer.output.shape[1:]
            total += height * width * channels * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, layers.Conv2D):
            height, width, channels = layer.output.shape[1:]
            total += height * width * channels * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1]
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def forward(model: keras.Model, runtime: str):
    """The network alone under the runtime ("keras" or "litert"), called on a float batch."""
    return litert.LiteModel(litert.convert(model)) if runtime == "litert" else compiled_forward(model)


def images_per_second(model: keras.Model, input_size: int, runtime: str = "keras", batch: int = 64,
                      repeats: int = 5) -> float:
    run = forward(model, runtime)
    pixels = np.random.default_rng(0).uniform(0, 255, (batch, input_size, input_size, 3)).astype(np.float32)
    run(pixels)
    start = time.perf_counter()
    for _ in range(repeats):
        np.asarray(run(pixels))
    return batch * repeats / (time.perf_counter() - start)


def scores(probabilities_validation, labels_validation, probabilities_test, labels_test) -> dict:
    melanoma = CLASS_NAMES.index(MELANOMA)
    threshold = threshold_for_sensitivity(labels_validation == melanoma, probabilities_validation[:, melanoma], 0.90)
    return {**figures(probabilities_test, labels_test, CLASS_NAMES, threshold), "threshold": threshold}


def generalisation(predict, test: list[data.Example]) -> dict:
    """Melanoma AUC where the source cannot help: inside the older ISIC archive alone (melanoma against the
    nevi and keratoses of the same source), with every test image in the colours of the other source, and
    seen through a contact dermatoscope's round window (black outside it), which the collection lacks."""
    pictures = [Image.open(example.path).convert("RGB") for example in test]
    melanoma = CLASS_NAMES.index(MELANOMA)
    labels = np.array([example.label for example in test]) == melanoma
    sources = np.array([example.source for example in test])
    scores = predict(pictures)[:, melanoma]
    archive = sources == ARCHIVE
    swapped = swap_sources(pictures, sources)
    return {"archive_auc": roc_auc(labels[archive], scores[archive]) if archive.any() else float("nan"),
            "swapped_auc": roc_auc(labels, predict(swapped)[:, melanoma]) if swapped else float("nan"),
            "rim_auc": roc_auc(labels, predict([PERTURBATIONS["dermatoscope rim"](image) for image in pictures])
                               [:, melanoma])}


def run_baseline(split: data.Split, out_dir: Path, epochs: int) -> dict:
    keras.utils.set_random_seed(SEED)
    parts = {name: (data.read_images(getattr(split, name), 180).astype(np.float32),
                    np.array([e.label for e in getattr(split, name)])) for name in ("train", "validation", "test")}
    model = assignment_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(*parts["train"], validation_data=parts["validation"], epochs=epochs, batch_size=32, verbose=2)
    training_seconds = time.perf_counter() - start
    path = out_dir / "assignment.keras"
    model.save(path)
    result = scores(model.predict(parts["validation"][0], verbose=0), parts["validation"][1],
                    model.predict(parts["test"][0], verbose=0), parts["test"][1])
    result |= generalisation(lambda pictures: model.predict(np.stack(as_arrays(pictures, 180)).astype(np.float32),
                                                            verbose=0), split.test)
    return {**result, "training_seconds": training_seconds, "images_per_second": images_per_second(model, 180),
            "images_per_second_litert": images_per_second(model, 180, "litert"),
            "parameters": model.count_params(), "multiply_adds": multiply_adds(model),
            "size_mb": path.stat().st_size / 1e6, "test_images": len(parts["test"][1])}


def run_project(data_dirs: list[Path], test_split: list[data.Example], out_dir: Path, epochs: int) -> dict:
    start = time.perf_counter()
    card = train(data_dirs, out_dir, seed=SEED, backbone="efficientnet_lite0",
                 **recipe_defaults("efficientnet_lite0", epochs=epochs))
    training_seconds = time.perf_counter() - start
    card, artifact = read_card(out_dir)
    classifier = Classifier(str(artifact), card["class_names"], card["input_size"])
    test = card["metrics"]["test"]
    return {
        **generalisation(lambda pictures: classifier.predict(as_arrays(pictures, classifier.input_size)),
                         test_split),
        **test, "threshold": card["alert_threshold"], "training_seconds": training_seconds,
        "images_per_second": images_per_second(classifier.model, card["input_size"]),
        "images_per_second_litert": images_per_second(classifier.model, card["input_size"], "litert"),
        "parameters": classifier.model.count_params(), "multiply_adds": multiply_adds(classifier.model),
        "size_mb": artifact.stat().st_size / 1e6,
        "test_images": test["images"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", default=DATA_DIRS,
                        help="class-folder sets, trained on together (default: both folders of ../shared)")
    parser.add_argument("--out", type=Path, default=None, help="Where to keep both models (default: a temp dir).")
    parser.add_argument("--baseline-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=None, help="Default: the project recipe's.")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="model-quality-"))
    out.mkdir(parents=True, exist_ok=True)
    # The project's audit and split, once: the baseline trains on it and both are tested on its test part.
    examples, _ = data.list_examples(args.data, CLASS_NAMES)
    split = data.split_examples(examples, seed=SEED)
    results = {
        "assignment CNN": run_baseline(split, out, args.baseline_epochs),
        "project model": run_project(args.data, split.test, out / "project", args.epochs),
    }
    (out / "model_quality.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [("balanced accuracy (test)", "balanced_accuracy", "{:.3f}"),
            ("melanoma AUC (test)", "melanoma_auc", "{:.3f}"),
            ("melanoma sensitivity @thr", "melanoma_sensitivity", "{:.3f}"),
            ("melanoma specificity @thr", "melanoma_specificity", "{:.3f}"), ("ECE", "ece", "{:.3f}"),
            ("melanoma AUC, archive only", "archive_auc", "{:.3f}"),
            ("melanoma AUC, colours swapped", "swapped_auc", "{:.3f}"),
            ("melanoma AUC, dermatoscope rim", "rim_auc", "{:.3f}"),
            ("alert threshold", "threshold", "{:.3f}"), ("training time (s)", "training_seconds", "{:.0f}"),
            ("inference images/s (b=64)", "images_per_second", "{:.0f}"),
            ("  the same through LiteRT", "images_per_second_litert", "{:.0f}"), ("parameters", "parameters", "{:,}"),
            ("multiply-adds an image", "multiply_adds", "{:,}"), ("model size (MB)", "size_mb", "{:.1f}"),
            ("test images", "test_images", "{}")]
    print(f"\n{'':28s}{'assignment CNN':>16s}{'project model':>16s}   ({os.cpu_count()} cores)")
    for label, key, form in rows:
        cells = [form.format(results[name][key]) if results[name][key] is not None else "-" for name in results]
        print(f"{label:28s}" + "".join(f"{cell:>16s}" for cell in cells))
    print(f"\nmodels and JSON in {out}")


if __name__ == "__main__":
    main()
