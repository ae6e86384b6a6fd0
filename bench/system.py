"""The whole system for a benchmark: `melanoma serve` in a fresh instance folder (SQLite and an embedded
Redis by default, or a given PostgreSQL and Redis), with hospitals created and their keys handed back."""

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from web.serve import free_port

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("MELANOMA_SHARED", ROOT.parent / "shared")) / "datasets" / "isic-9class" / "Train"
MELANOMA = [sys.executable, "-m", "web.cli"]


def pick_images(count: int, offset: int) -> list[Path]:
    everything = sorted(DATA_DIR.rglob("*.jpg"))
    if len(everything) < count:
        raise SystemExit(f"only {len(everything)} images under {DATA_DIR}")
    step = len(everything) // count
    return [everything[(offset + i * step) % len(everything)] for i in range(count)]


@contextlib.contextmanager
def running_system(hospitals: int = 1, database_url: str = "", redis_url: str = "", settings: dict | None = None,
                   instance: Path | None = None) -> Iterator[tuple[str, list[str]]]:
    """Yields (server URL, one API key per hospital) while `melanoma serve` runs, in the instance folder given
    (or a new one) with these settings (environment variables); stops it afterwards."""
    instance = instance or Path(tempfile.mkdtemp(prefix="melanoma-bench-"))
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"MELANOMA_INSTANCE": str(instance), "PYTHONUNBUFFERED": "1", **(settings or {})})
    if database_url:
        env["DATABASE_URL"] = database_url
        env.setdefault("SECRET_KEY", secrets.token_hex(32))  # required outside the embedded run
    if redis_url:
        env["REDIS_URL"] = redis_url
    subprocess.run([*MELANOMA, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    keys = []
    for number in range(hospitals):
        created = subprocess.run([*MELANOMA, "hospitals", "create", f"bench-{os.getpid()}-{number}"], cwd=ROOT,
                                 env=env, check=True, capture_output=True, text=True)
        keys.append(created.stdout.strip().splitlines()[-1])
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
        yield server, keys
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=60)
        log.close()
