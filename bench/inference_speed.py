"""How many images a second an inference worker classifies: decoding stored JPEG/PNG bytes at the model's
input size (on every core), then predicting them in batches, as `worker.tasks` does.

    .venv/bin/python bench/inference_speed.py [MODEL_DIR ...] [--data DIR] [--images 256] [--batch 64]
        [--photo-size 4000x3000] [--runtime keras litert] [--assignment-cnn]

The collection's pictures are 180 pixels a side; a hospital's dermatoscope photographs are megapixels, and
their decoding can cost more than the network. --photo-size enlarges each picture to that size and stores
it as a JPEG (quality 92) first, so decoding is measured on photographs of that size.

Each model runs under each --runtime (worker.classifier.predictor.RUNTIMES; "auto" is what a worker on this
machine serves with), --repeats times after a warm-up; every run's figures are printed, since a 2-core
machine's timings vary with whatever else it is doing. --assignment-cnn adds the course CNN of
bench/model_quality.py (untrained: its speed does not depend on its weights), network only, under the same
runtimes, so speed-ups can be read against it on the same machine.
"""

import argparse
import io
import os
import time
from pathlib import Path

import numpy as np
from model_quality import assignment_cnn, forward, multiply_adds
from PIL import Image

from web.config import DEFAULT_MODEL_DIR, Config
from worker.classifier.artifacts import read_card
from worker.classifier.choices import RUNTIMES
from worker.classifier.images import decode_image, decode_images
from worker.classifier.predictor import Classifier, chosen_runtime

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("MELANOMA_SHARED", ROOT.parent / "shared")) / "datasets" / "isic-9class" / "Train"


def pick_files(data_dir: Path, count: int) -> list[bytes]:
    """Every k-th image of the folder tree, so each class is represented; raises if there are too few."""
    everything = sorted(path for path in data_dir.rglob("*") if path.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if len(everything) < count:
        raise SystemExit(f"only {len(everything)} images under {data_dir}, asked for {count}")
    step = len(everything) // count
    return [path.read_bytes() for path in everything[::step][:count]]


def as_photographs(files: list[bytes], size: str) -> list[bytes]:
    """Each picture enlarged to WIDTHxHEIGHT and stored as a JPEG, as a camera would deliver it."""
    width, height = (int(side) for side in size.lower().split("x"))
    photographs = []
    for blob in files:
        out = io.BytesIO()
        Image.open(io.BytesIO(blob)).convert("RGB").resize((width, height), Image.Resampling.BICUBIC).save(
            out, format="JPEG", quality=92)
        photographs.append(out.getvalue())
    return photographs


def measure(model_dir: Path, runtime: str, files: list[bytes], batch: int, repeats: int) -> list[dict]:
    card, artifact = read_card(model_dir)
    classifier = Classifier(str(artifact), card["class_names"], card["input_size"], runtime=runtime,
                            cache_dir=Config.MODEL_CACHE_DIR)
    classifier.predict([decode_image(blob, classifier.input_size) for blob in files[:batch]], batch_size=batch)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        arrays = decode_images(lambda blob: blob, files, classifier.input_size)
        decoded = time.perf_counter()
        classifier.predict(arrays, batch_size=batch)
        done = time.perf_counter()
        runs.append({"runtime": classifier.runtime, "input_size": classifier.input_size,
                     "multiply_adds": multiply_adds(classifier.model),
                     "decode": len(files) / (decoded - start),
                     "predict": len(files) / (done - decoded), "both": len(files) / (done - start)})
    return runs


def measure_assignment_cnn(runtime: str, images: int, batch: int, repeats: int) -> list[float]:
    """Images a second through the course CNN alone (180 px), batch by batch, under the runtime."""
    run = forward(assignment_cnn(), runtime)
    pixels = np.random.default_rng(0).uniform(0, 255, (images, 180, 180, 3)).astype(np.float32)
    run(pixels[:batch])
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for offset in range(0, images, batch):
            np.asarray(run(pixels[offset:offset + batch]))
        runs.append(images / (time.perf_counter() - start))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, default=[DEFAULT_MODEL_DIR])
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--photo-size", help="WIDTHxHEIGHT: decode photographs of this size (JPEG)")
    parser.add_argument("--runtime", nargs="+", choices=RUNTIMES, default=["auto"])
    parser.add_argument("--assignment-cnn", action="store_true", help="Add the course CNN, network only.")
    args = parser.parse_args()
    files = pick_files(args.data, args.images)
    if args.photo_size:
        files = as_photographs(files, args.photo_size)
    print(f"{args.images} images{f' of {args.photo_size}' if args.photo_size else ''}, batches of {args.batch}, "
          f"{os.cpu_count()} cores; images a second")
    print(f"{'model':32s}{'input':>7s}{'M mult-adds':>12s}{'decode':>9s}{'predict':>9s}{'both':>9s}  runtime")
    for model_dir in args.models:
        for runtime in args.runtime:
            for run in measure(model_dir, runtime, files, args.batch, args.repeats):
                print(f"{model_dir.name:32s}{run['input_size']:>7d}{run['multiply_adds'] / 1e6:>12.0f}"
                      f"{run['decode']:>9.0f}{run['predict']:>9.0f}{run['both']:>9.0f}  {run['runtime']}")
    if args.assignment_cnn:
        arithmetic = multiply_adds(assignment_cnn()) / 1e6
        for runtime in args.runtime:
            chosen = chosen_runtime(runtime)
            for speed in measure_assignment_cnn(chosen, args.images, args.batch, args.repeats):
                print(f"{'assignment CNN (network only)':32s}{180:>7d}{arithmetic:>12.0f}{'':>9s}{speed:>9.0f}"
                      f"{'':>9s}  {chosen}")


if __name__ == "__main__":
    main()
