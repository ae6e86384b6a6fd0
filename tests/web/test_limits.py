"""Guessing is rate-limited: failed authentication per client and per key prefix, uploads and reads per key;
429 with Retry-After, the counts kept in the real Redis so every web process shares them."""

import io

import redis

from tests.conftest import csrf_token, make_hospital, make_png, make_user


def _from(address: str) -> dict:
    return {"REMOTE_ADDR": address}


def _assert_throttled(response) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert "Retry-After" in response.get_json()["error"]


def test_wrong_keys_from_one_client_are_answered_429_after_the_limit(app, client):
    _, key = make_hospital()
    limit = int(app.config["RATE_LIMIT_AUTH_FAILURES"].split()[0])
    for attempt in range(limit):
        answer = client.get("/api/v1/batches", headers={"X-API-Key": f"mk_guess{attempt:04d}"},
                            environ_base=_from("10.0.0.1"))
        assert answer.status_code == 401
    _assert_throttled(client.get("/api/v1/batches", headers={"X-API-Key": "mk_guessmore"},
                                 environ_base=_from("10.0.0.1")))
    # The client is throttled whatever it sends now; another client with its key is not.
    _assert_throttled(client.get("/api/v1/batches", headers={"X-API-Key": key}, environ_base=_from("10.0.0.1")))
    assert client.get("/api/v1/batches", headers={"X-API-Key": key}, environ_base=_from("10.0.0.2")).status_code == 200
    counted = redis.Redis.from_url(app.config["REDIS_URL"]).keys(f"*{app.config['RATELIMIT_KEY_PREFIX']}/*")
    assert counted, "the counts are not in Redis"


def test_guesses_at_one_key_prefix_from_many_clients_are_throttled(app, client):
    app.config["RATE_LIMIT_AUTH_FAILURES"] = "5 per minute"
    for attempt in range(5):
        answer = client.get("/api/v1/alerts", headers={"X-API-Key": f"mk_abcdefg{attempt}xyz"},
                            environ_base=_from(f"10.0.1.{attempt}"))
        assert answer.status_code == 401
    _assert_throttled(client.get("/api/v1/alerts", headers={"X-API-Key": "mk_abcdefgzzz"},
                                 environ_base=_from("10.0.1.99")))
    assert client.get("/api/v1/alerts", headers={"X-API-Key": "mk_otherpfx"},
                      environ_base=_from("10.0.1.98")).status_code == 401


def test_good_requests_do_not_count_as_failures(app, client):
    app.config["RATE_LIMIT_AUTH_FAILURES"] = "2 per minute"
    _, key = make_hospital()
    for _ in range(10):
        assert client.get("/api/v1/batches", headers={"X-API-Key": key}).status_code == 200


def test_uploads_and_reads_are_limited_per_key(app, client):
    app.config["RATE_LIMIT_UPLOADS"] = "2 per minute"
    app.config["RATE_LIMIT_READS"] = "3 per minute"
    _, key = make_hospital()
    _, other = make_hospital()
    for _ in range(2):
        answer = client.post("/api/v1/batches", headers={"X-API-Key": key},
                             data={"files": (io.BytesIO(make_png()), "a.png")})
        assert answer.status_code == 202
    _assert_throttled(client.post("/api/v1/batches", headers={"X-API-Key": key},
                                  data={"files": (io.BytesIO(make_png()), "a.png")}))
    assert client.post("/api/v1/batches", headers={"X-API-Key": other},
                       data={"files": (io.BytesIO(make_png()), "a.png")}).status_code == 202
    for _ in range(3):
        assert client.get("/api/v1/batches", headers={"X-API-Key": key}).status_code == 200
    _assert_throttled(client.get("/api/v1/batches", headers={"X-API-Key": key}))


def test_wrong_dashboard_passwords_are_throttled(app, client):
    make_user("someone@example.org", role="admin")
    app.config["RATE_LIMIT_AUTH_FAILURES"] = "3 per minute"
    token = csrf_token(client.get("/login").text)

    def attempt(password: str):
        return client.post("/login", data={"email": "someone@example.org", "password": password, "csrf_token": token})

    for _ in range(3):
        assert attempt("a-wrong-password").status_code == 401
    answer = attempt("a-long-enough-password")
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
