"""Content-addressed image store: each distinct file is written once, under its SHA-256."""

import hashlib
import os
import tempfile
from pathlib import Path


class ImageStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def relative_path(self, sha256: str) -> str:
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def put(self, data: bytes) -> tuple[str, str]:
        """Store the bytes unless already there; returns (sha256, path relative to the root)."""
        sha256 = hashlib.sha256(data).hexdigest()
        relative = self.relative_path(sha256)
        target = self.root / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a crash never leaves a half file under a valid hash.
            handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        return sha256, relative

    def read(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()
