"""docker-compose.yml cannot run here (no Docker engine): check its shape and that every command it runs
names a real entry point of this project."""

import importlib

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_compose_has_the_production_services():
    assert {"redis", "postgres", "migrate", "web", "inference-worker", "training-worker", "beat"} <= set(SERVICES)


def test_app_services_share_one_image_and_differ_by_command():
    images = {SERVICES[name]["image"] for name in ("migrate", "web", "inference-worker", "training-worker", "beat")}
    assert images == {"melanoma-alert:latest"}
    assert (ROOT / SERVICES["web"]["build"]["context"] / "Dockerfile").is_file()


def test_services_wait_for_healthy_dependencies_and_the_migration():
    for name in ("redis", "postgres", "web", "inference-worker", "training-worker", "beat"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", "inference-worker", "training-worker", "beat"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_every_task_queue_has_a_compose_worker():
    from web.queue import EXPLAIN_QUEUE, INFERENCE_QUEUE, MAINTENANCE_QUEUE, TRAINING_QUEUE

    served = set()
    for service in SERVICES.values():
        command = service.get("command", [])
        if "--queues" in command:
            served |= set(command[command.index("--queues") + 1].split(","))
    assert {INFERENCE_QUEUE, EXPLAIN_QUEUE, MAINTENANCE_QUEUE, TRAINING_QUEUE} <= served


def test_inference_worker_reserves_a_gpu_and_serves_the_inference_queue():
    devices = SERVICES["inference-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    command = SERVICES["inference-worker"]["command"]
    assert "inference" in command[command.index("--queues") + 1].split(",")
    command = SERVICES["training-worker"]["command"]
    assert command[command.index("--queues") + 1] == "training"


@pytest.mark.parametrize("name", ["inference-worker", "training-worker", "beat"])
def test_celery_commands_name_the_project_celery_app_and_its_queues(name):
    from celery import Celery

    command = SERVICES[name]["command"]
    assert command[:3] == ["celery", "-A", "worker"]
    app = importlib.import_module("worker.celery").app
    assert isinstance(app, Celery)
    if "--queues" in command:
        known = {queue.name for queue in app.conf.task_queues}
        assert set(command[command.index("--queues") + 1].split(",")) <= known


def test_web_command_names_the_app_factory():
    command = SERVICES["web"]["command"]
    assert command[0] == "gunicorn"
    module, call = command[-1].split(":")
    factory = getattr(importlib.import_module(module), call.removesuffix("()"))
    assert factory().name == "web"


def test_migrate_command_is_a_real_cli_command():
    from web.cli import cli

    command = SERVICES["migrate"]["command"]
    assert command[0] == "melanoma"
    result = CliRunner().invoke(cli, [*command[1:], "--help"])
    assert result.exit_code == 0 and "Upgrade to a later version" in result.output


def test_dockerfile_installs_the_project_and_defaults_to_the_web_server():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'pip install -e ".[litert,train]"' in dockerfile
    cmd = [line for line in dockerfile.splitlines() if line.startswith("CMD")][0]
    assert '"web:create_app()"' in cmd


def test_compose_has_no_default_secrets():
    """`${NAME:?message}`: compose itself refuses to start without them (and the app refuses known defaults)."""
    text = (ROOT / "docker-compose.yml").read_text()
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD"):
        assert f"${{{name}:?" in text and f"${{{name}:-" not in text, name
