"""`melanoma serve` on embedded defaults (SQLite, embedded Redis): it serves, restarts a dead worker and
stops cleanly, as a newcomer's first try would use it."""

import csv
import os
import signal
import subprocess
import time

import psutil
import pytest
import requests

from tests.conftest import MELANOMA_CLI, ROOT, dataset_images
from web.serve import free_port


def _children(process: subprocess.Popen, word: str) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(process.pid).children():
        try:
            if word in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # exited (or a zombie not yet reaped by serve)
            pass
    return found


def _wait_for(condition, timeout: float, what: str, log_path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}; serve log:\n{log_path.read_text()[-4000:]}")


def test_serve_runs_the_system_on_embedded_defaults_and_restarts_a_dead_worker(tmp_path):
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "REDIS_URL", "STORAGE_DIR") and not key.startswith("MELANOMA_")}
    env.update({"MELANOMA_INSTANCE": str(tmp_path / "instance"), "PYTHONUNBUFFERED": "1"})

    not_migrated = subprocess.run([*MELANOMA_CLI, "serve"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert not_migrated.returncode != 0 and "melanoma db upgrade" in not_migrated.stderr

    subprocess.run([*MELANOMA_CLI, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    created = subprocess.run([*MELANOMA_CLI, "hospitals", "create", "First Try"], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True)
    key = created.stdout.strip().splitlines()[-1]
    port = free_port()  # not a port derived from the pid: 5400 + pid % 500 once came out as PostgreSQL's 5432
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        serve = subprocess.Popen([*MELANOMA_CLI, "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
        try:
            server = f"http://127.0.0.1:{port}"

            def healthy():
                try:
                    return requests.get(f"{server}/healthz", timeout=5).ok
                except requests.RequestException:
                    return False

            _wait_for(healthy, 60, "the web server", log_path)
            assert _children(serve, "redis-server"), "no embedded Redis was started"

            out = tmp_path / "results.csv"
            images = dataset_images("melanoma", 2) + dataset_images("basal cell carcinoma", 1)
            submit = subprocess.run([*MELANOMA_CLI, "submit", *map(str, images), "--server", server, "--api-key", key,
                                     "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=240)
            assert submit.returncode == 0, submit.stderr + log_path.read_text()[-4000:]
            assert [row["status"] for row in csv.DictReader(out.open())] == ["done"] * 3

            worker = _children(serve, "--queues inference")[0]
            worker.kill()
            _wait_for(lambda: [c for c in _children(serve, "--queues inference") if c.pid != worker.pid], 30,
                      "the worker to be restarted", log_path)
            assert "worker exited" in log_path.read_text()
        finally:
            children = psutil.Process(serve.pid).children(recursive=True)
            serve.send_signal(signal.SIGINT)
            serve.wait(timeout=90)
    assert serve.returncode == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
