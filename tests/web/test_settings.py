"""Settings: Celery's are data in the Flask config (defaults, overridden from the environment or by
create_app); secrets are required outside the embedded run."""

import json
import stat
import subprocess
import sys
from datetime import UTC

import pytest

from tests.conftest import MELANOMA_CLI, ROOT
from web import create_app
from web.config import KNOWN_DEFAULT_SECRETS, SECRET_FILE, InsecureSettings


def test_celery_takes_its_settings_from_the_flask_config_and_one_given_keeps_the_other_defaults(tmp_path):
    app = create_app({"INSTANCE_DIR": str(tmp_path), "CELERY": {"worker_prefetch_multiplier": 4}})
    conf = app.extensions["celery"].conf
    assert conf.worker_prefetch_multiplier == 4
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.broker_url == app.config["REDIS_URL"]


def test_a_deployment_overrides_a_celery_setting_from_the_environment(tmp_path):
    script = ("import json; from web import create_app; conf = create_app().extensions['celery'].conf; "
              "print(json.dumps([conf.worker_proc_alive_timeout, conf.broker_transport_options, conf.timezone]))")
    env = {"PATH": "/usr/bin:/bin", "MELANOMA_INSTANCE": str(tmp_path), "CELERY_WORKER_PROC_ALIVE_TIMEOUT": "120",
           "CELERY_BROKER_TRANSPORT_OPTIONS": '{"visibility_timeout": 7200}', "CELERY_TIMEZONE": "Europe/Vienna"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == [120, {"visibility_timeout": 7200}, "Europe/Vienna"]


@pytest.mark.parametrize("secret, problem", [("", "is not set"), ("dev-only-change-me", "is a known default"),
                                             ("change-me", "is a known default"), ("short-secret", "is shorter than")])
def test_a_production_start_refuses_a_missing_or_default_secret(tmp_path, secret, problem):
    settings = {"INSTANCE_DIR": str(tmp_path), "SECRET_KEY": secret,
                "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://postgres@127.0.0.1:5432/test"}
    with pytest.raises(InsecureSettings, match=f"SECRET_KEY {problem}"):
        create_app(settings)
    settings["SECRET_KEY"] = "a" * 40
    with pytest.raises(InsecureSettings, match="database password"):
        create_app({**settings, "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://melanoma:melanoma@db:5432/melanoma"})
    assert create_app(settings).config["SECRET_KEY"] == "a" * 40


def test_the_embedded_run_makes_its_own_secret_once(tmp_path):
    first = create_app({"INSTANCE_DIR": str(tmp_path), "SECRET_KEY": ""}).config["SECRET_KEY"]
    assert len(first) == 64 and first not in KNOWN_DEFAULT_SECRETS
    assert create_app({"INSTANCE_DIR": str(tmp_path), "SECRET_KEY": ""}).config["SECRET_KEY"] == first
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600
    assert create_app({"INSTANCE_DIR": str(tmp_path / "other"), "SECRET_KEY": ""}).config["SECRET_KEY"] != first


def test_the_cli_says_what_to_set_instead_of_a_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "MELANOMA_INSTANCE": str(tmp_path),
           "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test"}
    result = subprocess.run([*MELANOMA_CLI, "keys", "list"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "refusing to start: SECRET_KEY is not set" in result.stderr and "openssl rand" in result.stderr


def test_the_retraining_schedule_is_a_cron_expression_or_hours_and_a_bad_one_stops_the_start(tmp_path):
    from datetime import datetime, timedelta

    from celery.schedules import crontab

    settings = {"INSTANCE_DIR": str(tmp_path), "RETRAIN_DATA_DIRS": [str(tmp_path)]}
    weekly = create_app(settings).extensions["celery"].conf.beat_schedule["retrain"]["schedule"]
    assert isinstance(weekly, crontab)
    # The default runs on Sundays at 03:00: after a run on a Saturday noon, the next comes that Sunday at 03:00.
    saturday_noon = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    last_run, until_next, _ = weekly.remaining_delta(saturday_noon)
    assert last_run + until_next == datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    hourly = create_app({**settings, "RETRAIN_SCHEDULE": "1.5"}).extensions["celery"].conf.beat_schedule
    assert hourly["retrain"]["schedule"] == timedelta(hours=1.5)
    for bad in ("0 3 * *", "61 3 * * 0", "-2", "weekly"):
        with pytest.raises(ValueError, match="RETRAIN_SCHEDULE"):
            create_app({**settings, "RETRAIN_SCHEDULE": bad})
    assert "retrain" not in create_app({"INSTANCE_DIR": str(tmp_path)}).extensions["celery"].conf.beat_schedule
