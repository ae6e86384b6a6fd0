"""The files of a model directory, as `melanoma train` writes them and everything else reads them.

Plain JSON and hashing: the registry, the CLI and the web can use it without TensorFlow.
"""

import hashlib
import json
from pathlib import Path

CARD_NAME = "card.json"
ARTIFACT_NAME = "model.keras"
AUDIT_NAME = "audit.json"
HISTORY_NAME = "history.json"
EVALUATION_DIR = "evaluation"
EVALUATION_NAME = "evaluation.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(model_dir: str | Path) -> tuple[dict, Path]:
    """The card of a model directory and the path of its artifact, checked against the card's hash."""
    model_dir = Path(model_dir)
    card_path = model_dir / CARD_NAME
    if not card_path.is_file():
        raise ValueError(f"{model_dir} has no {CARD_NAME}; point at a directory written by `melanoma train`")
    card = json.loads(card_path.read_text())
    artifact = model_dir / card["artifact"]
    if not artifact.is_file():
        raise ValueError(f"the card names {artifact}, which does not exist")
    actual = file_sha256(artifact)
    if actual != card["artifact_sha256"]:
        raise ValueError(f"{artifact} has SHA-256 {actual}, but its card says {card['artifact_sha256']}")
    return card, artifact
