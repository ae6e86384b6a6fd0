"""Every route of the app, enumerated from its URL map, is checked for who may call it: a new route that
is not public by name, not an API route behind a hospital's key, or not a dashboard page behind its login
fails here. API routes answer another hospital 404, and no answer to one hospital carries another's data."""

import io

import pytest
from werkzeug.routing import Rule

from models import Alert, db
from tests.conftest import dataset_images, log_in, make_hospital, make_user
from tests.worker.test_inference import champion_threshold_zero
from web import diagnoses
from web.ingest import Upload, create_batch

PUBLIC = {"healthz", "readyz", "static", "dashboard.login"}
MARKER = "only-hospital-a-may-see-this"


def _rules(app) -> list[tuple[Rule, str]]:
    return [(rule, method) for rule in app.url_map.iter_rules()
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]


def _url(rule: Rule, values: dict) -> str:
    unknown = set(rule.arguments) - set(values)
    assert not unknown, f"{rule.rule}: the access test does not know how to fill {unknown}; teach it"
    return rule.build({name: values[name] for name in rule.arguments})[1]


@pytest.fixture
def two_hospitals(app):
    """Hospital A with a batch, an image named with a marker, an alert and a confirmed diagnosis; hospital B
    with nothing. An admin, and a dermatologist of each hospital."""
    app.config["RATE_LIMIT_AUTH_FAILURES"] = "1000 per minute"  # this test fails to log in on purpose, often
    hospital_a, key_a = make_hospital()
    hospital_b, key_b = make_hospital()
    make_user("admin@example.org", role="admin")
    make_user("a@example.org", hospitals=[hospital_a])
    make_user("b@example.org", hospitals=[hospital_b])
    image = dataset_images("melanoma", 1)[0]
    batch, _ = create_batch(hospital_a, [Upload(f"{MARKER}.jpg", image.read_bytes())])
    champion_threshold_zero(app, [batch.images[0].id])
    alert = db.session.scalars(db.select(Alert)).one()
    alert.heatmap_path = batch.images[0].storage_path  # a picture to serve, as a drawn heatmap would be
    db.session.commit()
    diagnoses.record(hospital_a, [{"image_id": batch.images[0].id, "diagnosis": "melanoma",
                                   "method": "histopathology"}], actor="test")
    values = {"batch_id": batch.id, "alert_id": alert.id, "image_id": batch.images[0].id, "action": "acknowledge",
              "model_id": alert.prediction.model_version_id, "name": "roc", "hospital_id": hospital_a.id,
              "key_id": hospital_a.api_keys[0].id, "filename": "app.css"}
    return values, key_a, key_b


def _call(client, method: str, url: str, **kwargs):
    if method == "POST":
        kwargs.setdefault("data", {"files": (io.BytesIO(b"not an image"), "x.jpg")})
    return client.open(url, method=method, **kwargs)


def test_every_route_is_public_by_name_or_an_api_or_dashboard_route(app):
    for rule, _ in _rules(app):
        assert rule.endpoint in PUBLIC or rule.endpoint.split(".")[0] in ("api", "dashboard"), rule.rule


def test_every_api_and_dashboard_route_refuses_a_caller_without_its_credentials(app, client, two_hospitals):
    values, key_a, _ = two_hospitals
    checked = 0
    for rule, method in _rules(app):
        if rule.endpoint in PUBLIC:
            continue
        url = _url(rule, values)
        if rule.endpoint.startswith("api."):
            for headers in ({}, {"X-API-Key": "mk_not-a-key"}, {"Authorization": "Bearer "}):
                assert _call(client, method, url, headers=headers).status_code == 401, (method, url, headers)
        else:
            # Without a session, and with a hospital's API key: sent to the login page, or refused.
            for headers in ({}, {"X-API-Key": key_a}):
                answer = _call(client, method, url, headers=headers)
                # A form post fails its CSRF check (400) before the login is asked for.
                assert answer.status_code in (302, 401) + ((400,) if method == "POST" else ()), (method, url)
                assert answer.status_code != 302 or answer.location.startswith("/login"), (method, url)
                assert MARKER not in answer.get_data(as_text=True)
        checked += 1
    assert checked >= 20


def test_a_dashboard_session_is_no_api_key_and_opens_every_page_of_its_role(app, two_hospitals):
    values, _, _ = two_hospitals
    admin, dermatologist_b = app.test_client(), app.test_client()
    log_in(admin, "admin@example.org")
    log_in(dermatologist_b, "b@example.org")
    for rule, method in _rules(app):
        url = _url(rule, values)
        if rule.endpoint.startswith("api."):
            assert _call(admin, method, url).status_code == 401, (method, url)
        elif method == "GET" and rule.endpoint not in PUBLIC:
            assert _call(admin, method, url).status_code == 200, url
            answer = _call(dermatologist_b, method, url)
            # Hospital A's records are not there for B's dermatologist; the admins' pages are closed to them.
            expected = 403 if rule.endpoint in ADMIN_PAGES else 404 if rule.arguments else 200
            assert answer.status_code == expected, (url, answer.status_code)
            assert MARKER not in answer.get_data(as_text=True), url


ADMIN_PAGES = {"dashboard.model_list", "dashboard.model_plot", "dashboard.operations"}


def test_no_api_route_shows_one_hospital_what_belongs_to_another(app, client, two_hospitals):
    values, key_a, key_b = two_hospitals
    for rule, method in _rules(app):
        if not rule.endpoint.startswith("api."):
            continue
        url = _url(rule, values)
        theirs = _call(client, method, url, headers={"X-API-Key": key_b})
        assert MARKER not in theirs.get_data(as_text=True), (method, url)
        if rule.arguments:
            assert theirs.status_code == 404, (method, url, theirs.get_json())
            ours = _call(client, method, url, headers={"X-API-Key": key_a})
            assert ours.get_json(silent=True) != theirs.get_json(), (method, url)
    # The marker is there to be found by its owner (the alert was acknowledged by hospital A above).
    for listing in ("/api/v1/alerts?status=acknowledged", "/api/v1/diagnoses"):
        assert MARKER in client.get(listing, headers={"X-API-Key": key_a}).get_data(as_text=True), listing
