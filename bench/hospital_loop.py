"""The learning loop on real images: a hospital the base model never saw submits half of its images, posts
their confirmed diagnoses, and `melanoma retrain --now --wait` runs; its melanoma AUC, sensitivity and
specificity on its other half (never submitted) before and after, the gate's verdict, the training time, and the
base test split's figures before and after.

    python bench/hospital_loop.py --base-model DIR --base-dirs DIR,DIR --submit DIR --evaluate DIR

--submit and --evaluate are class-folder sets of the hospital (their metadata.csv gives each image's
diagnosis and method); the whole system runs on its embedded defaults in a new instance folder."""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.system import MELANOMA, ROOT, running_system  # noqa: E402

METHODS = {"histo": "histopathology", "consensus": "consensus", "follow_up": "follow-up", "confocal": "clinical"}


def _figures(model_dir: Path, folder: str) -> dict:
    from worker.classifier.evaluation import evaluate

    report = evaluate(model_dir, [folder], split="all", out_dir=Path(tempfile.mkdtemp()), perturb=False)
    overall = report["overall"]
    return {key: (overall[key], overall["intervals_95"].get(key)) for key in
            ("melanoma_auc", "melanoma_sensitivity", "melanoma_specificity")}


def _line(name: str, figures: dict) -> str:
    return f"{name:<28}" + "  ".join(f"{key.removeprefix('melanoma_')} {value:.3f} [{low:.3f}, {high:.3f}]"
                                     for key, (value, (low, high)) in figures.items())


def _diagnoses(results_csv: Path, folder: Path) -> list[dict]:
    """Each submitted image's confirmed diagnosis, from the folder's metadata.csv by file name."""
    truth = {row["image_id"]: row for row in csv.DictReader(open(folder / "metadata.csv"))}
    rows = []
    for result in csv.DictReader(open(results_csv)):
        known = truth.get(Path(result["filename"]).stem)
        if known and result["image_id"]:
            rows.append({"image_id": int(result["image_id"]), "diagnosis": known["diagnosis"],
                         "method": METHODS.get(known.get("dx_type", ""), "histopathology")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", required=True, type=Path)
    parser.add_argument("--base-dirs", required=True, help="the base model's training folders, comma-separated")
    parser.add_argument("--submit", required=True, type=Path)
    parser.add_argument("--evaluate", required=True, type=Path)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    args = parser.parse_args()
    print(_line("hospital, before", _figures(args.base_model, str(args.evaluate))), flush=True)
    instance = Path(tempfile.mkdtemp(prefix="melanoma-loop-"))
    # The machine's Redis (its own database), so the CLI below reaches the same broker as the workers.
    settings = {"MODEL_DIR": str(args.base_model.resolve()), "RETRAIN_DATA_DIRS": args.base_dirs,
                "REDIS_URL": args.redis_url}
    with running_system(settings=settings, instance=instance, redis_url=args.redis_url) as (server, keys):
        env = {**os.environ, "MELANOMA_INSTANCE": str(instance), **settings}
        results = instance / "submitted.csv"
        started = time.monotonic()
        subprocess.run([*MELANOMA, "submit", str(args.submit), "--server", server, "--api-key", keys[0],
                        "--out", str(results)], cwd=ROOT, env=env, check=True, capture_output=True)
        print(f"submitted and classified {args.submit} in {time.monotonic() - started:.0f} s", flush=True)
        rows = _diagnoses(results, args.submit)
        answer = requests.post(f"{server}/api/v1/diagnoses", json={"diagnoses": rows},
                               headers={"X-API-Key": keys[0]}, timeout=300).json()
        print(f"diagnoses posted: {answer['stored']} stored, {len(answer['refused'])} refused", flush=True)
        started = time.monotonic()
        retrain = subprocess.run([*MELANOMA, "retrain", "--now", "--wait"], cwd=ROOT, env=env, text=True,
                                 capture_output=True)
        print(retrain.stdout + retrain.stderr[-2000:], flush=True)
        print(f"retrain --now --wait took {time.monotonic() - started:.0f} s", flush=True)
        reliability = requests.get(f"{server}/api/v1/reliability", headers={"X-API-Key": keys[0]}, timeout=60)
        print("reliability:", json.dumps(reliability.json()), flush=True)
    new_dir = max((instance / "models").iterdir())
    print(_line("hospital, after", _figures(new_dir, str(args.evaluate))))
    comparison = json.loads(next((new_dir / "evaluation").glob("compared-with-*.json")).read_text())
    for name in ("melanoma AUC", "balanced accuracy", "sensitivity at its threshold", "specificity at its threshold"):
        figure = comparison["figures"][name]
        print(f"base test split {name}: {figure['champion']:.3f} -> {figure['challenger']:.3f} "
              f"(difference 95 % {figure['interval_95']})")


if __name__ == "__main__":
    main()
