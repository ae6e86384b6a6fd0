"""While a dependency is down, requests answer 503 with Retry-After and a reason (JSON under /api/), never
a 500; /readyz says which one; /healthz stays a liveness check. The outages here are real: the settings
point at a port where nothing listens. Restarts mid-batch are in tests/e2e/test_outages.py."""

import io

import pytest

from tests.conftest import make_hospital, make_png
from web import create_app
from web.serve import free_port


@pytest.fixture
def nothing_listens() -> str:
    return f"127.0.0.1:{free_port()}"


def _check_503(response):
    assert response.status_code == 503, response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0
    return response


def test_the_api_answers_503_with_a_reason_while_the_database_is_down(nothing_listens, backend_settings):
    app = create_app({**backend_settings["postgresql"], "TESTING": True,
                      "SQLALCHEMY_DATABASE_URI": f"postgresql+psycopg://postgres@{nothing_listens}/test"})
    client = app.test_client()
    headers = {"X-API-Key": "mk_anything"}
    for response in (client.get("/api/v1/batches", headers=headers),
                     client.get("/api/v1/alerts", headers=headers),
                     client.post("/api/v1/batches", headers=headers,
                                 data={"files": (io.BytesIO(make_png()), "a.png")})):
        _check_503(response)
        assert "database is unavailable" in response.get_json()["error"]
    assert client.get("/healthz").status_code == 200
    ready = _check_503(client.get("/readyz")).get_json()
    assert ready["status"] == "unavailable" and ready["checks"]["database"] != "ok"
    assert ready["checks"]["redis"] == "ok"


def test_an_upload_is_kept_while_redis_is_down_and_readyz_says_so(app, nothing_listens):
    _, key = make_hospital()
    app.config["REDIS_URL"] = f"redis://{nothing_listens}/0"
    app.extensions["celery"].conf.broker_url = app.config["REDIS_URL"]
    client = app.test_client()
    response = client.post("/api/v1/batches", headers={"X-API-Key": key},
                           data={"files": [(io.BytesIO(make_png()), "a.png"), (io.BytesIO(make_png(9, 9)), "b.png")]})
    # The rows and files are stored; the sweep sends them once Redis is back.
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["counts"]["queued"] == 2
    ready = _check_503(client.get("/readyz")).get_json()
    assert ready["checks"]["database"] == "ok" and ready["checks"]["redis"] != "ok"
    assert ready["checks"]["inference_worker"] != "ok"


def test_readyz_is_ready_with_a_worker_consuming(app, worker):
    # The worker fixture has started a real worker on this backend's Redis; it may still be starting.
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = app.test_client().get("/readyz")
        if answer.status_code == 200:
            break
        time.sleep(1)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok",
                                                               "inference_worker": "ok"}}
