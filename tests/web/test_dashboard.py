"""The dermatologists' workspace through the Flask test client on both databases: accounts and sessions, the
worklist (paged, filtered, counted, a fixed number of queries), the alert actions on the page and through
the API, and `melanoma users`. The browser drives the same pages in tests/e2e/test_browser.py."""

import pytest
from sqlalchemy import event

from models import Alert, AuditEvent, ConfirmedDiagnosis, Image, ModelVersion, Prediction, User, db
from tests.conftest import csrf_token, log_in, make_hospital, make_png, make_user
from web.accounts import users
from web.ingest import Upload, create_batch


def _alerts(hospital, count: int, warning_every: int = 0) -> list[Alert]:
    """count alerted images of the hospital, written as the worker writes them, probabilities descending."""
    batch, _ = create_batch(hospital, [Upload(f"lesion-{i}.png", make_png(colour=(i % 256, i // 256, 9)))
                                       for i in range(count)])
    version = ModelVersion.champion() or ModelVersion(
        name="test", version="1", artifact_path="x", artifact_sha256="0" * 64, class_names=["melanoma", "nevus"],
        input_size=32, alert_threshold=0.5, is_champion=True, status="champion")
    alerts = []
    for i, image in enumerate(batch.images):
        probability = 0.99 - i / (count * 2)
        warning = "blurred: little fine detail" if warning_every and i % warning_every == 0 else None
        prediction = Prediction(image_id=image.id, model_version=version, predicted_class="melanoma",
                                probabilities={"melanoma": probability, "nevus": 1 - probability},
                                melanoma_probability=probability, quality_warning=warning)
        alerts.append(Alert(prediction=prediction, hospital_id=hospital.id, melanoma_probability=probability,
                            threshold=0.5))
        image.status = "done"
    db.session.add_all(alerts)
    db.session.commit()
    return alerts


def test_login_sessions_logout_and_csrf(app, client):
    make_user("derm@example.org", hospitals=[make_hospital()[0]])
    assert client.get("/", headers={"Accept": "text/html"}).location.startswith("/login")
    wrong = log_in(client, "derm@example.org", "not-the-password")
    assert wrong.status_code == 401 and "Wrong email or password" in wrong.text
    assert log_in(client, "nobody@example.org").status_code == 401
    answer = log_in(client, "DERM@example.org ")
    assert answer.status_code == 302 and answer.location == "/"
    page = client.get("/")
    assert page.status_code == 200 and "derm@example.org" in page.text
    # A session cookie that outlives its hours: HttpOnly, SameSite, and a fixed lifetime.
    cookie = client.get_cookie("session")
    assert cookie.http_only and cookie.same_site == "Lax" and cookie.expires is not None
    assert client.post("/logout").status_code == 400  # no CSRF token: refused, still signed in
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf_token": csrf_token(page.text)}).location == "/login"
    assert client.get("/").status_code == 401
    # Only paths on this site after a login.
    assert log_in(client, "derm@example.org").location == "/"
    client.post("/logout", data={"csrf_token": csrf_token(client.get("/").text)})
    token = csrf_token(client.get("/login").text)
    answer = client.post("/login", data={"email": "derm@example.org", "password": "a-long-enough-password",
                                         "csrf_token": token, "next": "//evil.example/x"})
    assert answer.location == "/"


def test_a_changed_password_or_a_deactivated_account_ends_the_session(app, client, runner):
    user = make_user("derm@example.org", hospitals=[make_hospital()[0]])
    log_in(client, "derm@example.org")
    assert client.get("/").status_code == 200
    assert runner.invoke(users, args=["password", "derm@example.org", "--password-stdin"],
                         input="another-long-password\n").exit_code == 0
    assert client.get("/").status_code == 401
    log_in(client, "derm@example.org", "another-long-password")
    assert client.get("/").status_code == 200
    user.active = False
    db.session.commit()
    assert client.get("/").status_code == 401


def test_the_worklist_pages_filters_and_counts_with_a_fixed_number_of_queries(app, client):
    hospital, _ = make_hospital()
    make_user("derm@example.org", hospitals=[hospital])
    log_in(client, "derm@example.org")

    def queries(url: str) -> tuple[int, str]:
        count = [0]

        def counted(*_):
            count[0] += 1

        event.listen(db.engine, "before_cursor_execute", counted)
        try:
            page = client.get(url)
        finally:
            event.remove(db.engine, "before_cursor_execute", counted)
        assert page.status_code == 200, page.text
        return count[0], page.text

    alerts = _alerts(hospital, 3)
    few, _ = queries("/")
    alerts += _alerts(hospital, 57, warning_every=3)
    many, page = queries("/")
    assert few == many, f"the worklist's queries grow with its rows: {few} for 3 alerts, {many} for 50"
    assert page.count('class="thumb"') == 50 and "Page 1 of 2" in page and "60 alerts" in page
    second = client.get("/?page=2").text
    assert second.count('class="thumb"') == 10 and "Page 2 of 2" in second
    warned = client.get("/?quality=warning").text
    assert "19 alerts" in warned and warned.count("blurred: little fine detail") == 19
    # Acknowledged alerts stay to do; resolved ones leave it, and each status tab counts.
    alerts[0].status, alerts[1].status = "acknowledged", "resolved"
    db.session.commit()
    page = client.get("/").text
    assert "59 alerts" in page and "resolved <span class=\"count\">1</span>" in page
    assert "1 alerts" in client.get("/?status=resolved").text
    assert client.get("/?status=nonsense").status_code == 400
    assert client.get("/?since=yesterday").status_code == 400
    assert "0 alerts" in client.get("/?since=2999-01-01").text


def test_a_dermatologist_sees_only_the_hospitals_they_are_assigned_to(app, client):
    ours, _ = make_hospital("Ours")
    theirs, _ = make_hospital("Theirs")
    make_user("derm@example.org", hospitals=[ours])
    _alerts(ours, 2)
    hidden = _alerts(theirs, 3)
    log_in(client, "derm@example.org")
    page = client.get("/").text
    assert "2 alerts" in page and "Theirs" not in page
    batch_id = hidden[0].prediction.image.batch_id
    for url in (f"/alerts/{hidden[0].id}", f"/batches/{batch_id}", f"/batches/{batch_id}/progress.json",
                f"/batches/{batch_id}/results.csv", f"/images/{hidden[0].prediction.image_id}"):
        assert client.get(url).status_code == 404, url
    token = csrf_token(page)
    assert client.post(f"/alerts/{hidden[0].id}/acknowledge", data={"csrf_token": token}).status_code == 404
    assert client.get("/models").status_code == 403 and client.get("/operations").status_code == 403


def test_the_hospitals_patient_and_lesion_references_show_filter_and_gather_a_patients_pictures(app, client):
    hospital, _ = make_hospital()
    make_user("derm@example.org", hospitals=[hospital])
    first, second, third = _alerts(hospital, 3)
    images = [alert.prediction.image for alert in (first, second, third)]
    images[0].patient_ref, images[0].lesion_ref = "P-00417", "left shoulder"
    images[1].patient_ref, images[1].lesion_ref = "P-00417", "back"
    images[2].patient_ref = "P-9"
    db.session.commit()
    log_in(client, "derm@example.org")
    page = client.get("/").text
    assert "patient <a" in page and "lesion left shoulder" in page
    mine = client.get("/?patient=P-00417").text
    assert "2 alerts" in mine and "lesion back" in mine and "P-9" not in mine
    assert "0 alerts" in client.get("/?patient=P-0041").text  # a reference is matched whole
    alert_page = client.get(f"/alerts/{first.id}").text
    assert "P-00417, left shoulder" in alert_page and "Other pictures of patient P-00417" in alert_page
    others = alert_page.split('id="patient-pictures"')[1].split("</table>")[0]
    assert images[1].filename in others and images[0].filename not in others and images[2].filename not in others
    assert f"/alerts/{second.id}" in others
    assert "the only picture of this patient" in client.get(f"/alerts/{third.id}").text
    # The patient's picture sent again is a repeat: listed once, as its first copy.
    batch, _ = create_batch(hospital, [Upload("again.png", client.get(f"/images/{images[1].id}").data)],
                            references={"again.png": ("P-00417", "back")})
    db.session.add(Prediction(image_id=batch.images[0].id, model_version=first.prediction.model_version,
                              predicted_class="melanoma", probabilities={}, melanoma_probability=0.9,
                              repeat_of_id=second.prediction_id))
    db.session.commit()
    others = client.get(f"/alerts/{first.id}").text.split('id="patient-pictures"')[1].split("</table>")[0]
    assert "again.png" not in others and images[1].filename in others


def test_alert_actions_on_the_page_are_recorded_and_a_resolution_is_a_confirmed_label(app, client):
    hospital, _ = make_hospital()
    make_user("derm@example.org", hospitals=[hospital])
    alert, other = _alerts(hospital, 2)
    log_in(client, "derm@example.org")
    token = csrf_token(client.get(f"/alerts/{alert.id}").text)

    def act(action: str, **form) -> str:
        answer = client.post(f"/alerts/{alert.id}/{action}", data={"csrf_token": token, **form})
        assert answer.status_code == 302
        return client.get(answer.location).text

    assert "Acknowledged." in act("acknowledge")
    assert "Assigned to you." in act("assign")
    assert "Not done: the comment is empty" in act("comment", comment="  ")
    assert "Comment added." in act("comment", comment="Biopsy booked for Tuesday")
    assert "Not done: unknown diagnosis" in act("resolve", diagnosis="cancer", method="histopathology")
    page = act("resolve", diagnosis="melanoma", method="histopathology", confirmed_by="Dr Path")
    assert "Resolved: confirmed melanoma (histopathology)." in page and "Biopsy booked for Tuesday" in page
    db.session.expire_all()
    alert = db.session.get(Alert, alert.id)
    assert alert.status == "resolved" and alert.assigned_user.email == "derm@example.org"
    label = db.session.scalars(db.select(ConfirmedDiagnosis)).one()
    assert (label.image_id, label.diagnosis, label.recorded_by) == (alert.prediction.image_id, "melanoma",
                                                                     "user:derm@example.org")
    actions = db.session.scalars(db.select(AuditEvent.action).where(AuditEvent.target == f"alert:{alert.id}")
                                 .order_by(AuditEvent.id)).all()
    assert actions == ["alert.acknowledged", "alert.assigned", "alert.commented", "alert.resolved"]
    assert "is resolved already" in act("dismiss", reason="duplicate")
    answer = client.post(f"/alerts/{other.id}/dismiss", data={"csrf_token": token, "reason": "a scar, seen in clinic"})
    assert "Dismissed." in client.get(answer.location).text
    assert db.session.get(Alert, other.id).status == "dismissed"


def test_hospitals_acknowledge_and_resolve_their_alerts_through_the_api(app, client):
    hospital, key = make_hospital()
    _, other_key = make_hospital()
    alert, second = _alerts(hospital, 2)
    url = f"/api/v1/alerts/{alert.id}"
    assert client.post(f"{url}/acknowledge", headers={"X-API-Key": other_key}).status_code == 404
    answer = client.post(f"{url}/acknowledge", headers={"X-API-Key": key})
    assert answer.status_code == 200 and answer.get_json()["status"] == "acknowledged"
    assert client.post(f"{url}/resolve", headers={"X-API-Key": key}, data="x").status_code == 400
    refused = client.post(f"{url}/resolve", headers={"X-API-Key": key}, json={"diagnosis": "melanoma", "method": "?"})
    assert refused.status_code == 422 and "unknown method" in refused.get_json()["error"]
    answer = client.post(f"{url}/resolve", headers={"X-API-Key": key},
                         json={"diagnosis": "nevus", "method": "follow-up", "confirmed_by": "clinic 4"})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["status"] == "resolved" and body["confirmed_diagnosis"]["diagnosis"] == "nevus"
    assert client.post(f"{url}/resolve", headers={"X-API-Key": key},
                       json={"diagnosis": "nevus", "method": "follow-up"}).status_code == 409
    listed = client.get("/api/v1/alerts?status=resolved", headers={"X-API-Key": key}).get_json()
    assert [row["id"] for row in listed["alerts"]] == [alert.id]
    results = client.get(f"/api/v1/batches/{second.prediction.image.batch_id}/results",
                         headers={"X-API-Key": key}).get_json()["results"]
    assert {row["confirmed_diagnosis"] for row in results} == {"nevus", None}


def test_the_batch_page_reports_progress_and_its_images(app, client):
    hospital, _ = make_hospital()
    make_user("derm@example.org", hospitals=[hospital])
    batch, _ = create_batch(hospital, [Upload("a.png", make_png()), Upload("b.png", b"not an image"),
                                       Upload("c.png", make_png(colour=(1, 2, 3)))])
    log_in(client, "derm@example.org")
    progress = client.get(f"/batches/{batch.id}/progress.json").get_json()
    assert (progress["total"], progress["finished"], progress["rejected"], progress["status"]) == (3, 1, 1, "queued")
    page = client.get(f"/batches/{batch.id}").text
    assert "not an image we can read" in page and "BytesIO" not in page
    db.session.get(Image, batch.images[0].id).status = "done"
    db.session.commit()
    progress = client.get(f"/batches/{batch.id}/progress.json").get_json()
    assert progress["finished"] == 2 and progress["seconds_left"] is not None
    assert client.get(f"/batches/{batch.id}/results.csv").text.startswith("filename,patient_ref,lesion_ref,status")
    assert f'href="/batches/{batch.id}"' in client.get("/batches").text


def test_admins_promote_and_roll_back_models_after_a_confirmation(app, client):
    make_user("admin@example.org", role="admin")
    old = ModelVersion(name="m", version="1", artifact_path="x1", artifact_sha256="1" * 64, class_names=[],
                       input_size=32, alert_threshold=0.5)
    new = ModelVersion(name="m", version="2", artifact_path="x2", artifact_sha256="2" * 64, class_names=[],
                       input_size=32, alert_threshold=0.4)
    db.session.add_all([old, new])
    old.promote()
    db.session.commit()
    log_in(client, "admin@example.org")
    token = csrf_token(client.get("/models").text)
    asked = client.post(f"/models/{new.id}/promote", data={"csrf_token": token})
    assert asked.status_code == 200 and "Serve m:2 to every hospital" in asked.text
    assert ModelVersion.champion().id == old.id
    client.post(f"/models/{new.id}/promote", data={"csrf_token": token, "confirm": "yes"})
    db.session.expire_all()
    assert ModelVersion.champion().id == new.id
    assert "Why" in client.post("/models/rollback", data={"csrf_token": token, "confirm": "yes"}).text
    client.post("/models/rollback", data={"csrf_token": token, "confirm": "yes", "reason": "misses melanomas"})
    db.session.expire_all()
    assert ModelVersion.champion().id == old.id and db.session.get(ModelVersion, new.id).status == "rejected"
    assert db.session.scalar(db.select(AuditEvent).where(AuditEvent.action == "model.rejected")).actor == \
        "user:admin@example.org"


def test_admins_issue_and_revoke_keys_on_the_operations_page(app, client):
    hospital, key = make_hospital("St Keys")
    make_user("admin@example.org", role="admin")
    log_in(client, "admin@example.org")
    page = client.get("/operations").text
    assert "St Keys" in page and "images classified in the last hour" in page
    shown = client.post(f"/hospitals/{hospital.id}/keys", data={"csrf_token": csrf_token(page)}).text
    new_key = shown.split('id="new-key">')[1].split("<")[0]
    assert client.get("/api/v1/batches", headers={"X-API-Key": new_key}).status_code == 200
    old_id = hospital.api_keys[0].id
    client.post(f"/keys/{old_id}/revoke", data={"csrf_token": csrf_token(page)})
    assert client.get("/api/v1/batches", headers={"X-API-Key": key}).status_code == 401


@pytest.mark.parametrize("backend", ["sqlite"])
def test_users_are_created_from_the_command_line(app, runner):
    make_hospital("St Cli")
    made = runner.invoke(users, args=["create", "Derm@Example.org", "--role", "dermatologist", "--hospital",
                               "St Cli", "--password-stdin"], input="a-long-enough-password\n")
    assert made.exit_code == 0, made.output
    user = User.by_email("derm@example.org")
    assert [hospital.name for hospital in user.hospitals] == ["St Cli"]
    assert user.password_hash.startswith("scrypt:") and user.check_password("a-long-enough-password")
    for args, words in ((["x@example.org", "--role", "dermatologist"], "name one with --hospital"),
                        (["y@example.org", "--role", "admin"], "at least 10 characters"),
                        (["derm@example.org", "--role", "admin"], "exists already")):
        refused = runner.invoke(users, args=["create", *args, "--password-stdin"],
                                input="short\n" if "y@" in args[0] else "a-long-enough-password\n")
        assert refused.exit_code != 0 and words in refused.output, refused.output
    first = runner.invoke(users, args=["demo"])
    assert "shown only this once" in first.output
    assert "printed when it was created" in runner.invoke(users, args=["demo"]).output
