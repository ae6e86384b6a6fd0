"""Time from POST to complete results for a batch of real images, through the whole running system.

Starts `melanoma serve` in a fresh instance folder (SQLite and an embedded Redis by default, or
--database-url/--redis-url for PostgreSQL and an external Redis), warms the worker with one image, then
submits --images real ISIC images --runs times and prints the timings.

    .venv/bin/python bench/e2e_latency.py --images 100 --runs 3
"""

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from web.serve import free_port

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT.parent / "shared" / "datasets" / "isic-9class" / "Train"
MELANOMA = [sys.executable, "-m", "web.cli"]


def pick_images(count: int, offset: int) -> list[Path]:
    everything = sorted(DATA_DIR.rglob("*.jpg"))
    if len(everything) < count:
        raise SystemExit(f"only {len(everything)} images under {DATA_DIR}")
    step = len(everything) // count
    return [everything[(offset + i * step) % len(everything)] for i in range(count)]


def submit_and_wait(server: str, key: str, images: list[Path]) -> dict:
    files = [("files", (f"{path.parent.name}/{path.name}", path.read_bytes(), "image/jpeg")) for path in images]
    headers = {"X-API-Key": key}
    start = time.perf_counter()
    response = requests.post(f"{server}/api/v1/batches", files=files, headers=headers, timeout=600)
    response.raise_for_status()
    accepted = time.perf_counter()
    batch = response.json()
    while batch["status"] != "done":
        time.sleep(0.05)
        batch = requests.get(batch["url"], headers=headers, timeout=60).json()
    done = time.perf_counter()
    csv_text = requests.get(batch["results_url"], params={"format": "csv"}, headers=headers, timeout=60).text
    results = time.perf_counter()
    assert len(csv_text.strip().splitlines()) == len(images) + 1
    # Heatmaps follow the results; wait for them so the next run starts on an idle worker.
    while True:
        alerts = requests.get(f"{server}/api/v1/alerts", headers=headers, timeout=60).json()["alerts"]
        if all(alert["heatmap_url"] for alert in alerts if alert["batch_id"] == batch["id"]):
            break
        time.sleep(0.1)
    heatmaps = time.perf_counter()
    return {"upload_s": accepted - start, "post_to_done_s": done - start, "post_to_csv_s": results - start,
            "post_to_heatmaps_s": heatmaps - start, "counts": batch["counts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()

    instance = Path(tempfile.mkdtemp(prefix="melanoma-bench-"))
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"MELANOMA_INSTANCE": str(instance), "PYTHONUNBUFFERED": "1"})
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
        env.setdefault("SECRET_KEY", secrets.token_hex(32))  # required outside the embedded run
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    subprocess.run([*MELANOMA, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    created = subprocess.run([*MELANOMA, "hospitals", "create", f"bench-{os.getpid()}"], cwd=ROOT, env=env,
                             check=True, capture_output=True, text=True)
    key = created.stdout.strip().splitlines()[-1]
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    log = open(instance / "serve.log", "wb")
    serve = subprocess.Popen([*MELANOMA, "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{server}/healthz", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or serve.poll() is not None:
                raise SystemExit(f"the server did not start; see {instance / 'serve.log'}")
            time.sleep(0.2)
        warm = submit_and_wait(server, key, pick_images(1, 0))
        print(f"warm-up (worker start, model load, 1 image): {warm['post_to_done_s']:.2f} s")
        timings = []
        for run in range(args.runs):
            result = submit_and_wait(server, key, pick_images(args.images, run + 1))
            timings.append(result)
            print(f"run {run + 1}: upload {result['upload_s']:.2f} s, POST->done {result['post_to_done_s']:.2f} s, "
                  f"POST->CSV {result['post_to_csv_s']:.2f} s, "
                  f"POST->all heatmaps {result['post_to_heatmaps_s']:.2f} s, counts {result['counts']}")
        done = [t["post_to_done_s"] for t in timings]
        backend = "postgresql" if args.database_url.startswith("postgresql") else "sqlite"
        print(f"\n{args.images}-image batch, {backend}, {os.cpu_count()} cores: "
              f"POST->complete results median {statistics.median(done):.2f} s "
              f"(min {min(done):.2f}, max {max(done):.2f}); "
              f"{args.images / statistics.median(done):.1f} images/s end to end")
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=60)
        log.close()


if __name__ == "__main__":
    main()
