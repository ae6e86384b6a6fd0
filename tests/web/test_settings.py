"""Celery's settings are data in the Flask config: defaults, overridden from the environment or by create_app."""

import json
import subprocess
import sys

from tests.conftest import ROOT
from web import create_app


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
