"""Time from POST to complete results for a batch of real images, through the whole running system.

Starts `melanoma serve` in a fresh instance folder (SQLite and an embedded Redis by default, or
--database-url/--redis-url for PostgreSQL and an external Redis), warms the worker with one image, then
submits --images real ISIC images --runs times and prints the timings.

    .venv/bin/python bench/e2e_latency.py --images 100 --runs 3
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import requests
from system import pick_images, running_system


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

    with running_system(1, args.database_url, args.redis_url) as (server, (key,)):
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


if __name__ == "__main__":
    main()
