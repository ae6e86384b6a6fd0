"""The dermatologists' workspace in a real browser (Debian's chromium, driven by playwright) against the app
on loopback, a real Celery worker and Redis: log in, watch a batch finish, open its alert with the picture and
the heatmap, resolve it with a diagnosis, and the walls between hospitals, CSRF and logout.

With MELANOMA_SCREENSHOTS=DIR the pages are saved there (docs/screenshots holds the README's)."""

import os
import shutil
import time
from pathlib import Path

import pytest
import requests

from models import Alert, db
from tests.conftest import PASSWORD, dataset_images, make_hospital, make_user

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.parametrize("backend", ["postgresql"]), pytest.mark.slow]


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: apt-get install chromium (.ci/run installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def _screenshot(page, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("MELANOMA_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _log_in(page, server: str, email: str) -> None:
    page.goto(f"{server}/")
    assert "/login" in page.url  # every page needs a session
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/")


def test_a_dermatologist_works_an_alert_through_in_the_browser(app, live_server, worker, browser, tmp_path):
    hospital_a, key_a = make_hospital("St Mary's")
    hospital_b, _ = make_hospital("Other Hospital")
    make_user("derm@stmarys.org", hospitals=[hospital_a])
    make_user("derm@other.org", hospitals=[hospital_b])
    pictures = dataset_images("melanoma", 8) + dataset_images("nevus", 4)
    headers = {"X-API-Key": key_a}

    # Four patients, each with lesions of their own: the hospital's codes travel beside the pictures.
    references = "file,patient,lesion\n" + "".join(f"{path.name},P-{1040 + i % 4},L{i // 4 + 1}\n"
                                                     for i, path in enumerate(pictures))

    def submit() -> int:
        answer = requests.post(f"{live_server}/api/v1/batches", headers=headers, timeout=60,
                               data={"references": references},
                               files=[("files", (path.name, path.read_bytes())) for path in pictures])
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    _log_in(page, live_server, "derm@stmarys.org")

    # The batch page follows the workers without a reload.
    batch_id = submit()
    page.goto(f"{live_server}/batches/{batch_id}")
    page.wait_for_function("document.getElementById('p-status').textContent === 'done'", timeout=180_000)
    assert page.inner_text("#p-finished") == str(len(pictures))
    page.wait_for_selector("#images tbody tr:nth-child(12) td:nth-child(4):not(:empty)")
    _screenshot(page, "batch", tmp_path)

    # The alert is on the worklist, opens, and shows the picture and (once drawn) the heatmap.
    db.session.expire_all()
    alerts = db.session.scalars(db.select(Alert).order_by(Alert.melanoma_probability.desc())).all()
    assert alerts, "the shipped model raised no alert on 8 melanomas"
    page.goto(f"{live_server}/")
    assert page.locator("#alerts tbody tr").count() == len(alerts)
    _screenshot(page, "worklist", tmp_path)
    patient = alerts[0].prediction.image.patient_ref
    assert patient and f"patient {patient}" in page.inner_text("#alerts")
    page.click("#alerts tbody tr:first-child td:nth-child(2) a")
    page.wait_for_url(f"{live_server}/alerts/{alerts[0].id}")
    deadline = time.monotonic() + 120
    while page.locator("#heatmap").count() == 0:
        assert time.monotonic() < deadline, "no heatmap drawn in 2 minutes"
        time.sleep(1)
        page.reload()
    assert page.evaluate("document.querySelector('#picture img').naturalWidth") > 0
    assert page.evaluate("document.getElementById('heatmap').naturalWidth") > 0
    assert page.is_visible("#heatmap")
    page.uncheck("#heatmap-toggle")
    assert not page.is_visible("#heatmap")
    page.check("#heatmap-toggle")
    assert page.locator("#patient-pictures tbody tr").count() == 2  # the patient's two other pictures
    _screenshot(page, "alert", tmp_path)

    # Resolve it with the confirmed diagnosis: the alert closes, the history says who, the label is stored.
    page.select_option("#resolve-form select[name=diagnosis]", "melanoma")
    page.select_option("#resolve-form select[name=method]", "histopathology")
    page.fill("#resolve-form input[name=confirmed_by]", "Dr Path")
    page.click("#resolve")
    page.wait_for_selector("text=Resolved: confirmed melanoma")
    assert page.inner_text("#alert-status") == "resolved"
    assert "resolved by user:derm@stmarys.org" in page.inner_text("#history")
    labels = requests.get(f"{live_server}/api/v1/diagnoses", headers=headers, timeout=30).json()
    image_id = alerts[0].prediction.image_id
    assert any(row["image_id"] == image_id and row["diagnosis"] == "melanoma" and row["method"] == "histopathology"
               and row["recorded_by"] == "user:derm@stmarys.org" for row in labels["diagnoses"]), labels

    # A form posted without its CSRF token is refused, even from a signed-in session.
    refused = page.request.post(f"{live_server}/alerts/{alerts[1].id}/acknowledge", form={})
    assert refused.status == 400
    db.session.expire_all()
    assert db.session.get(Alert, alerts[1].id).status == "open"

    # The same pictures again: done, each marked a repeat, and no second alert.
    again = submit()
    page.goto(f"{live_server}/batches/{again}")
    page.wait_for_function("document.getElementById('p-status').textContent === 'done'", timeout=180_000)
    # The table is fetched again once the batch is done: wait for it rather than race it.
    page.wait_for_function(f"document.querySelectorAll('#images .badge.repeat').length === {len(pictures)}",
                           timeout=30_000)
    db.session.expire_all()
    assert db.session.scalar(db.select(db.func.count(Alert.id))) == len(alerts)

    # Another hospital's dermatologist finds nothing of St Mary's by URL.
    other = browser.new_context().new_page()
    _log_in(other, live_server, "derm@other.org")
    for url in (f"/alerts/{alerts[0].id}", f"/images/{image_id}", f"/images/{image_id}/thumbnail",
                f"/alerts/{alerts[0].id}/heatmap", f"/batches/{batch_id}"):
        assert other.goto(f"{live_server}{url}").status == 404, url
    assert other.locator("#alerts").count() == 0

    # At tablet width every page fits: wide tables scroll in their own box, never the whole page.
    page.set_viewport_size({"width": 768, "height": 1024})
    for url in ("/", f"/batches/{batch_id}", "/batches", f"/alerts/{alerts[0].id}"):
        page.goto(f"{live_server}{url}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 768, url
    _screenshot(page, "tablet-alert", tmp_path)

    # Logging out ends the session: the pages send the browser to the login again.
    page.goto(f"{live_server}/")
    page.click("#logout")
    page.wait_for_url("**/login")
    page.goto(f"{live_server}/alerts/{alerts[0].id}")
    assert "/login" in page.url


def test_an_admin_keeps_models_workers_and_keys_from_the_keyboard(app, live_server, worker, browser, tmp_path):
    from web.config import DEFAULT_MODEL_DIR
    from worker.registry import ensure_champion

    champion = ensure_champion(DEFAULT_MODEL_DIR)
    hospital, _ = make_hospital("St Mary's")
    make_user("admin@stmarys.org", role="admin")
    page = browser.new_context(viewport={"width": 768, "height": 1024}).new_page()

    # Signed in with the keyboard alone: tab between the fields, Enter sends the form.
    page.goto(f"{live_server}/login")
    page.focus("input[name=email]")
    page.keyboard.type("admin@stmarys.org")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server}/")

    # The registry with the serving model's figures and plots, which load.
    page.goto(f"{live_server}/models")
    assert champion.label in page.inner_text("#models") and "serving" in page.inner_text("#models")
    plots = page.locator("details[open] img")
    assert plots.count() > 0, "the champion's plots are missing from its model page"
    assert all(plot.evaluate("image => image.complete && image.naturalWidth > 0") for plot in plots.all())
    assert page.evaluate("document.documentElement.scrollWidth") <= 768

    # Operations: the worker of this test consumes the inference queue.
    page.goto(f"{live_server}/operations")
    row = page.locator("#queues tbody tr", has_text="inference").inner_text()
    assert "@" in row and "none" not in row and "unreachable" not in row, row
    assert page.evaluate("document.documentElement.scrollWidth") <= 768
    _screenshot(page, "tablet-operations", tmp_path)

    # A key issued here is shown once and works at once; revoked, it is refused at once.
    page.locator(".card", has_text="St Mary's").locator("button", has_text="Issue a new key").press("Enter")
    key = page.inner_text("#new-key").strip()
    assert key.startswith("mk_")
    assert requests.get(f"{live_server}/api/v1/alerts", headers={"X-API-Key": key}, timeout=30).status_code == 200
    page.goto(f"{live_server}/operations")
    assert key not in page.content()
    page.locator("li", has_text=key[:10]).locator("button", has_text="Revoke").click()
    page.wait_for_selector("text=revoked: it is refused from the next request on")
    assert requests.get(f"{live_server}/api/v1/alerts", headers={"X-API-Key": key}, timeout=30).status_code == 401
