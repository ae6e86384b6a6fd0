"""The hospitals' client behind `melanoma submit`: upload files as one batch, wait, save the results CSV."""

import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import requests
from tqdm import tqdm
from urllib3.fields import RequestField

from web.references import ReferencesError, parse_references

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


class SubmitError(Exception):
    """Something the user must fix or retry; the message says what."""


def collect_uploads(paths: list[str]) -> list[tuple[Path, str]]:
    """(file, the name it is sent under) for files named directly and image files found recursively in folders,
    in a stable order. The name is the path below the folder given, or the bare name of a file given: local
    folder names (which can name patients) never reach the server."""
    files: list[tuple[Path, str]] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += [(found, found.relative_to(path).as_posix()) for found in sorted(path.rglob("*"))
                      if found.is_file() and found.suffix.lower() in IMAGE_SUFFIXES]
        elif path.is_file():
            files.append((path, path.name))
        else:
            raise SubmitError(f"{name}: no such file or folder")
    if not files:
        raise SubmitError("no image files found (looked for .jpg, .jpeg and .png)")
    return files


def read_references(path: str, files: list[tuple[Path, str]]) -> str:
    """The references CSV at path, checked against the names the files are sent under, as the server will
    check it: a mistake stops the submission here, before anything is uploaded."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise SubmitError(f"{path}: cannot read the references as UTF-8 text: {error}") from None
    try:
        parse_references(text, [name for _, name in files])
    except ReferencesError as error:
        raise SubmitError(f"{path}: {error}") from None
    return text


def collect_files(paths: list[str]) -> list[Path]:
    """The local files collect_uploads finds."""
    return [path for path, _ in collect_uploads(paths)]


class MultipartFiles:
    """A multipart/form-data body of files that reads each file from disk only as it is sent, so a batch of
    thousands of dermatoscope pictures never sits in the client's memory, and no file stays open. Its
    length is known before sending (a Content-Length, which every server accepts), and each iteration
    starts over, so a retry sends the whole body again."""

    CHUNK_BYTES = 1 << 20

    def __init__(self, files: list[tuple[Path, str]] | list[Path], field: str = "files",
                 fields: dict[str, str] | None = None):
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        # Text fields (the references CSV) go first, whole, as (head, text, size); files follow, read as sent.
        self._parts: list[tuple[bytes, Path | bytes, int]] = []
        for name, text in (fields or {}).items():
            header = RequestField(name, b"")
            header.make_multipart(content_type="text/plain; charset=utf-8")
            data = text.encode()
            self._parts.append((f"--{boundary}\r\n".encode() + header.render_headers().encode(), data, len(data)))
        for entry in files:
            path, name = entry if isinstance(entry, tuple) else (entry, entry.name)
            header = RequestField(field, b"", filename=name)
            header.make_multipart(content_type="application/octet-stream")
            self._parts.append((f"--{boundary}\r\n".encode() + header.render_headers().encode(), path,
                                path.stat().st_size))
        self._end = f"--{boundary}--\r\n".encode()
        self._length = sum(len(head) + size + 2 for head, _, size in self._parts) + len(self._end)

    def __len__(self) -> int:
        return self._length

    def __iter__(self):
        for head, path, size in self._parts:
            yield head
            if isinstance(path, bytes):
                yield path + b"\r\n"
                continue
            with path.open("rb") as file:
                remaining = size
                while remaining:
                    chunk = file.read(min(self.CHUNK_BYTES, remaining))
                    if not chunk:
                        raise SubmitError(f"{path} shrank to {size - remaining} bytes while it was being sent")
                    remaining -= len(chunk)
                    yield chunk
            yield b"\r\n"
        yield self._end


class Client:
    def __init__(self, server: str, api_key: str, timeout: float = 300.0):
        if not api_key:
            raise SubmitError("no API key: pass --api-key or set MELANOMA_API_KEY")
        self.server = server.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        # Links the server returns are followed on the server we were given: behind a proxy the server may
        # name itself by an inner address, and the API key must go nowhere else.
        parsed = urlsplit(path)
        url = f"{self.server}{parsed.path}" + (f"?{parsed.query}" if parsed.query else "")
        self._last_was_transient = True
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as error:
            raise SubmitError(f"cannot reach {self.server}: is the server running? ({error})") from error
        self._last_was_transient = response.status_code >= 500
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text[:500]
            raise SubmitError(f"{method} {url} answered {response.status_code}: {message}")
        return response

    def submit(self, files: list[tuple[Path, str]] | list[Path], idempotency_key: str | None = None,
               attempts: int = 3, references: str | None = None) -> dict:
        """Upload the files as one batch, with the references CSV (web/references.py) where given. A dropped
        connection is retried with the same Idempotency-Key, so the server makes one batch however many
        times the upload is sent."""
        key = idempotency_key or uuid.uuid4().hex
        body = MultipartFiles(files, fields={"references": references} if references is not None else None)
        for attempt in range(1, attempts + 1):
            try:
                return self._request("POST", "/api/v1/batches", data=body,
                                     headers={"Idempotency-Key": key, "Content-Type": body.content_type}).json()
            except SubmitError:
                if attempt == attempts or not self._last_was_transient:
                    raise
                time.sleep(2 ** attempt)
        raise AssertionError("unreachable")

    def wait(self, batch: dict, poll_seconds: float = 1.0, show_progress: bool = True,
             stall_seconds: float = 1800.0) -> dict:
        """Poll the batch until no image is queued, with a progress bar; give up (the batch stays on the
        server) when no image has finished for stall_seconds."""
        total = batch["image_count"]
        last_progress, finished_before = time.monotonic(), -1
        with tqdm(total=total, unit="image", disable=not show_progress) as bar:
            while True:
                batch = self._request("GET", batch["url"]).json()
                counts = batch["counts"]
                finished = total - counts["queued"]
                bar.update(finished - bar.n)
                bar.set_postfix(alerts=counts["alerts"], rejected=counts["rejected"])
                if batch["status"] == "done":
                    return batch
                if finished > finished_before:
                    last_progress, finished_before = time.monotonic(), finished
                elif time.monotonic() - last_progress > stall_seconds:
                    raise SubmitError(
                        f"batch {batch['id']}: no image finished in {stall_seconds:.0f} s ({finished} of {total} "
                        f"done); it stays queued on the server, so fetch its results later from {batch['url']}")
                time.sleep(poll_seconds)

    def results_csv(self, batch: dict) -> str:
        return self._request("GET", batch["results_url"], params={"format": "csv"}).text
