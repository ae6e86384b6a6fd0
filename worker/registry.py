"""Model registry: model directories (artifact + card.json) become ModelVersion rows; one is champion.

Reads JSON and hashes files only (worker/classifier/artifacts.py), so the CLI can use it without TensorFlow.
"""

from pathlib import Path

from sqlalchemy.exc import IntegrityError

from models import AuditEvent, ModelVersion, db
from web.config import ROOT, resolve_path  # noqa: F401 (worker modules import it from here)
from worker.classifier.artifacts import read_card


def stored_path(path: Path) -> str:
    """Paths inside the project are stored relative to it, so the same row works in every deployment."""
    path = path.resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def register_model(model_dir: str | Path, promote: bool = False, actor: str = "system") -> ModelVersion:
    """Register the model directory (once: its artifact hash is unique; registering it again adds any card
    keys the stored card lacks); optionally make it champion."""
    card, artifact = read_card(model_dir)
    version = db.session.scalar(
        db.select(ModelVersion).where(ModelVersion.artifact_sha256 == card["artifact_sha256"])
    )
    if version is None:
        version = ModelVersion(
            name=card["name"], version=card["version"], artifact_path=stored_path(artifact),
            artifact_sha256=card["artifact_sha256"], class_names=card["class_names"],
            input_size=card["input_size"], alert_threshold=card["alert_threshold"],
            metrics=card.get("metrics", {}), card=card,
        )
        db.session.add(version)
        try:
            db.session.flush()
        except IntegrityError:
            # Another process registered the same artifact a moment ago.
            db.session.rollback()
            return register_model(model_dir, promote=promote, actor=actor)
        AuditEvent.record(actor, "model.registered", f"model:{version.id}", label=version.label)
    else:
        # The card on disk may hold what was measured after registration (a quality limit, say): those keys
        # are added, while every key already stored stays as it is.
        added = {key: value for key, value in card.items() if key not in (version.card or {})}
        if added:
            version.card = {**(version.card or {}), **added}
            AuditEvent.record(actor, "model.card_extended", f"model:{version.id}", label=version.label,
                              keys=sorted(added))
    if promote and not version.is_champion:
        version.promote()
        AuditEvent.record(actor, "model.promoted", f"model:{version.id}", label=version.label)
    db.session.commit()
    return version


def ensure_champion(default_model_dir: str | Path) -> ModelVersion:
    """The serving model; on a new database the model shipped with the project becomes champion."""
    champion = ModelVersion.champion()
    if champion is None:
        champion = register_model(default_model_dir, promote=True)
    return champion
