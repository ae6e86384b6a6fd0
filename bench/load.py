"""A bounded load test on loopback: --clients hospitals at once, each submitting --batches batches of
--images real ISIC images one after another and polling each to its results, through the whole running
system (`melanoma serve`, as bench/e2e_latency.py starts it). Prints lost images, 5xx and 429 answers,
throughput and the p50/p95 of the submit latency; asserts nothing about time.

    .venv/bin/python bench/load.py --clients 20 --batches 5 --images 20
"""

import argparse
import os
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests
from system import pick_images, running_system

POLL_SECONDS = 0.5


def client_run(server: str, key: str, number: int, batches: int, images: int, answers: Counter,
               lock: threading.Lock) -> dict:
    """One hospital's script: submit, poll to done, read the results; every answer's status is counted."""
    session = requests.Session()
    session.headers["X-API-Key"] = key

    def call(method: str, url: str, **kwargs) -> requests.Response:
        response = session.request(method, url, timeout=600, **kwargs)
        with lock:
            answers[response.status_code] += 1
        return response

    submit_s, sent, ended = [], 0, 0
    for batch in range(batches):
        paths = pick_images(images, offset=number * batches + batch)
        files = [("files", (f"{p.parent.name}/{p.name}", p.read_bytes(), "image/jpeg")) for p in paths]
        start = time.perf_counter()
        response = call("POST", f"{server}/api/v1/batches", files=files)
        submit_s.append(time.perf_counter() - start)
        if response.status_code != 202:
            continue
        sent += len(paths)
        url = response.json()["url"]
        while (body := call("GET", url)).status_code != 200 or body.json()["status"] != "done":
            time.sleep(POLL_SECONDS)
        results = call("GET", f"{url}/results").json()["results"]
        ended += sum(row["status"] in ("done", "rejected") for row in results)
    return {"submit_s": submit_s, "sent": sent, "ended": ended}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()

    answers, lock = Counter(), threading.Lock()
    with running_system(args.clients, args.database_url, args.redis_url) as (server, keys):
        # Warm the worker (its start and model load are not load).
        client_run(server, keys[0], 0, 1, 1, Counter(), lock)
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            runs = list(pool.map(lambda n: client_run(server, keys[n], n, args.batches, args.images, answers,
                                                      lock), range(args.clients)))
        wall = time.perf_counter() - start
    submits = [seconds for run in runs for seconds in run["submit_s"]]
    expected = args.clients * args.batches * args.images
    sent, ended = sum(run["sent"] for run in runs), sum(run["ended"] for run in runs)
    server_errors = sum(count for status, count in answers.items() if status >= 500)
    backend = "postgresql" if args.database_url.startswith("postgresql") else "sqlite"
    print(f"{args.clients} clients x {args.batches} batches x {args.images} images, {backend}, "
          f"{os.cpu_count()} cores")
    print(f"images: {expected} to send, {sent} accepted, {ended} ended with a result, "
          f"lost {expected - ended}")
    print(f"answers: {dict(sorted(answers.items()))}; 5xx: {server_errors}; 429: {answers.get(429, 0)}")
    print(f"throughput: {ended / wall:.1f} images/s end to end ({wall:.1f} s wall)")
    print(f"submit latency: p50 {percentile(submits, 0.5):.2f} s, p95 {percentile(submits, 0.95):.2f} s, "
          f"max {max(submits):.2f} s, mean {statistics.mean(submits):.2f} s over {len(submits)} uploads")


if __name__ == "__main__":
    main()
