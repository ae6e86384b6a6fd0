"""Every route of the app, enumerated from its URL map, is checked for who may call it: a new route that
is not public by name, not an API route behind a hospital's key, or not a dashboard page behind its login
fails here. API routes answer another hospital 404, and no answer to one hospital carries another's data."""

import io

import pytest
from werkzeug.routing import Rule

from models import Alert, db
from tests.conftest import dataset_images, make_hospital
from tests.worker.test_inference import champion_threshold_zero
from web import diagnoses
from web.ingest import Upload, create_batch

PUBLIC = {"healthz", "readyz", "static"}
MARKER = "only-hospital-a-may-see-this"
DASHBOARD_LOGIN = ("dermatologist", "a-dashboard-password")


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
    with nothing."""
    app.config["DASHBOARD_PASSWORD"] = DASHBOARD_LOGIN[1]
    app.config["RATE_LIMIT_AUTH_FAILURES"] = "1000 per minute"  # this test fails to log in on purpose, often
    hospital_a, key_a = make_hospital()
    _, key_b = make_hospital()
    image = dataset_images("melanoma", 1)[0]
    batch, _ = create_batch(hospital_a, [Upload(f"{MARKER}.jpg", image.read_bytes())])
    champion_threshold_zero(app, [batch.images[0].id])
    alert = db.session.scalars(db.select(Alert)).one()
    diagnoses.record(hospital_a, [{"image_id": batch.images[0].id, "diagnosis": "melanoma",
                                   "method": "histopathology"}], actor="test")
    return {"batch_id": batch.id, "alert_id": alert.id}, key_a, key_b


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
            # The dashboard's login is not an API key.
            assert _call(client, method, url, auth=DASHBOARD_LOGIN).status_code == 401, (method, url)
        else:
            assert _call(client, method, url).status_code == 401, (method, url)
            # A hospital's API key does not open the dermatologists' pages.
            assert _call(client, method, url, headers={"X-API-Key": key_a}).status_code == 401, (method, url)
            assert _call(client, method, url, auth=DASHBOARD_LOGIN).status_code == 200, (method, url)
        checked += 1
    assert checked >= 7


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
    for listing in ("/api/v1/alerts", "/api/v1/diagnoses"):  # the marker is there to be found by its owner
        assert MARKER in client.get(listing, headers={"X-API-Key": key_a}).get_data(as_text=True), listing
