"""The web side of `melanoma`: hospitals and submitting, against real services."""

import csv
import os
import subprocess

from models import Batch, Hospital, db
from models.hospital import ApiKey
from tests.conftest import MELANOMA_CLI, ROOT, dataset_images, worker_env
from web.cli import cli
from web.client import MultipartFiles
from worker.classifier.artifacts import file_sha256


def test_hospitals_create_prints_a_working_key_alone_on_the_last_line(runner, client):
    result = runner.invoke(cli, args=["hospitals", "create", "Royal Infirmary"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("mk_") and " " not in key
    assert ApiKey.find_hospital(key).name == "Royal Infirmary"
    assert client.get("/api/v1/alerts", headers={"X-API-Key": key}).status_code == 200
    again = runner.invoke(cli, args=["hospitals", "create", "Royal Infirmary"])
    assert again.exit_code != 0 and "exists" in again.output
    assert db.session.scalar(db.select(db.func.count(Hospital.id))) == 1


def test_keys_are_created_listed_and_revoked_and_a_revoked_key_is_refused_at_once(runner, client, hospital):
    hospital_row, first = hospital
    second = runner.invoke(cli, args=["keys", "create", hospital_row.name]).output.strip().splitlines()[-1]
    assert client.get("/api/v1/alerts", headers={"X-API-Key": second}).status_code == 200
    listed = runner.invoke(cli, args=["keys", "list", hospital_row.name]).output.splitlines()
    assert [line.split()[0] for line in listed] == [first[:10], second[:10]]
    assert all(line.endswith("active") for line in listed)

    revoked = runner.invoke(cli, args=["keys", "revoke", second[:10]])
    assert revoked.exit_code == 0, revoked.output
    assert client.get("/api/v1/alerts", headers={"X-API-Key": second}).status_code == 401
    assert client.get("/api/v1/alerts", headers={"X-API-Key": first}).status_code == 200
    assert "revoked" in runner.invoke(cli, args=["keys", "list"]).output.splitlines()[-1]
    assert runner.invoke(cli, args=["keys", "revoke", first]).exit_code == 0  # the whole key works too
    assert client.get("/api/v1/alerts", headers={"X-API-Key": first}).status_code == 401
    again = runner.invoke(cli, args=["keys", "revoke", second[:10]])
    assert again.exit_code != 0 and "no active key" in again.output
    assert runner.invoke(cli, args=["keys", "create", "Nowhere"]).exit_code != 0


def test_submit_uploads_a_folder_waits_and_writes_the_csv(app, live_server, worker, backend_settings, backend,
                                                           tmp_path, hospital):
    from models import ShiftMeasurement
    from web.config import DEFAULT_MODEL_DIR
    from web.reliability import SHIFT_MIN_IMAGES, WARNING
    from worker.registry import ensure_champion

    clinic, key = hospital
    # The serving model found this hospital's recent pictures far from its training images.
    db.session.add(ShiftMeasurement(hospital_id=clinic.id, model_version_id=ensure_champion(DEFAULT_MODEL_DIR).id,
                                    images=SHIFT_MIN_IMAGES, last_image_id=0, auc=0.9))
    db.session.commit()
    folder = tmp_path / "clinic"
    (folder / "day1").mkdir(parents=True)
    for path in dataset_images("melanoma", 2) + dataset_images("nevus", 2):
        (folder / "day1" / path.name).write_bytes(path.read_bytes())
    (folder / "notes.txt").write_text("skipped: not an image suffix")
    first = dataset_images("melanoma", 1)[0].name
    (tmp_path / "refs.csv").write_text(f"file,patient,lesion\nday1/{first},P-00417,left shoulder\n")
    out = tmp_path / "results.csv"
    env = {**worker_env(backend_settings[backend]), "MELANOMA_SERVER": live_server, "MELANOMA_API_KEY": key}
    result = subprocess.run([*MELANOMA_CLI, "submit", str(folder), "--wait", "--out", str(out),
                             "--references", str(tmp_path / "refs.csv")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + worker.output()[-3000:]
    assert f"warning: {WARNING}" in result.stderr
    batch_id = int(result.stdout.strip().splitlines()[-1])
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and all(row["status"] == "done" for row in rows)
    # Names below the folder given: the local path (which can name patients) never reaches the server.
    assert sorted(row["filename"] for row in rows) == sorted(
        f"day1/{path.name}" for path in dataset_images("melanoma", 2) + dataset_images("nevus", 2))
    assert {row["filename"]: (row["patient_ref"], row["lesion_ref"]) for row in rows if row["patient_ref"]} == {
        f"day1/{first}": ("P-00417", "left shoulder")}
    db.session.expire_all()
    assert db.session.get(Batch, batch_id).status == "done"


def test_submit_stops_waiting_when_nothing_finishes_and_says_where_the_batch_is(app, live_server, hospital):
    _, key = hospital  # no worker runs here, so the batch never moves
    env = {**os.environ, "MELANOMA_SERVER": live_server, "MELANOMA_API_KEY": key}
    result = subprocess.run([*MELANOMA_CLI, "submit", str(dataset_images("nevus", 1)[0]), "--wait",
                             "--stall-minutes", "0.05"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0 and "no image finished in 3 s (0 of 1 done)" in result.stderr
    assert "stays queued on the server" in result.stderr
    assert db.session.scalar(db.select(Batch.status)) == "queued"


def test_the_streamed_upload_body_is_multipart_the_api_reads_file_for_file(client, hospital, tmp_path):
    _, key = hospital
    files = []
    for index, path in enumerate(dataset_images("melanoma", 2) + dataset_images("nevus", 1)):
        copy = tmp_path / f'{index} "quoted" name{path.suffix}'
        copy.write_bytes(path.read_bytes())
        files.append(copy)
    references = f"file,patient,lesion\n{files[0].name},P-1,back\n"
    body = MultipartFiles([(path, path.name) for path in files], fields={"references": references})
    MultipartFiles.CHUNK_BYTES, chunk_bytes = 1000, MultipartFiles.CHUNK_BYTES  # many chunks a file
    try:
        sent = b"".join(body)
        assert b"".join(body) == sent and len(body) == len(sent)  # a retry sends it all again
    finally:
        MultipartFiles.CHUNK_BYTES = chunk_bytes
    response = client.post("/api/v1/batches", data=sent, content_type=body.content_type,
                           headers={"X-API-Key": key})
    assert response.status_code == 202, response.get_json()
    results = client.get(response.get_json()["results_url"], headers={"X-API-Key": key}).get_json()["results"]
    assert [row["filename"] for row in results] == [path.name for path in files]  # a bare file: its name alone
    assert [(row["patient_ref"], row["lesion_ref"]) for row in results] == [("P-1", "back"), (None, None),
                                                                            (None, None)]
    assert [row["sha256"] for row in results] == [file_sha256(path) for path in files]


def test_submit_without_a_key_or_server_says_what_to_do(tmp_path):
    image = dataset_images("nevus", 1)[0]
    env = {key: value for key, value in os.environ.items() if not key.startswith("MELANOMA_")}
    no_key = subprocess.run([*MELANOMA_CLI, "submit", str(image)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert no_key.returncode != 0 and "MELANOMA_API_KEY" in no_key.stderr
    no_server = subprocess.run([*MELANOMA_CLI, "submit", str(image), "--server", "http://127.0.0.1:9",
                                "--api-key", "k"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert no_server.returncode != 0 and "cannot reach" in no_server.stderr


def test_submit_checks_the_references_before_it_uploads_anything(tmp_path):
    folder = tmp_path / "clinic"
    (folder / "day1").mkdir(parents=True)
    image = dataset_images("nevus", 1)[0]
    (folder / "day1" / "a.jpg").write_bytes(image.read_bytes())
    references = tmp_path / "refs.csv"
    references.write_text("file,patient\na.jpg,P-1\n")  # the name is sent as day1/a.jpg
    # The server is unreachable: an error about the references proves nothing was sent.
    result = subprocess.run([*MELANOMA_CLI, "submit", str(folder), "--references", str(references),
                             "--server", "http://127.0.0.1:9", "--api-key", "k"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "'a.jpg' is not a file of this batch" in result.stderr, result.stderr
    assert "cannot reach" not in result.stderr


def test_melanoma_help_lists_the_web_and_the_worker_commands_and_not_flasks_generic_ones():
    result = subprocess.run([*MELANOMA_CLI, "--help"], cwd=ROOT, capture_output=True, text=True, check=True)
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert {"db", "hospitals", "serve", "submit", "models", "predict", "explain", "evaluate", "compare", "audit",
            "train"} <= listed
    assert not listed & {"run", "shell", "routes"}
