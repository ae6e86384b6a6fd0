"""The model this worker process serves: loaded once after the fork, reloaded when the champion changes."""

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app

from models import ModelVersion, db
from worker.classifier.artifacts import file_sha256
from worker.classifier.quality import QualityLimits
from worker.registry import ensure_champion, resolve_path

if TYPE_CHECKING:  # imported for real after the fork, in _load: importing it loads Keras
    from worker.classifier.predictor import Classifier

log = logging.getLogger(__name__)


@dataclass
class ServingModel:
    version_id: int
    label: str
    class_names: list[str]
    input_size: int
    alert_threshold: float
    classifier: "Classifier"
    artifact_sha256: str = ""
    quality_limits: QualityLimits = QualityLimits()  # from the card, read on every call; older cards lack some


_lock = threading.Lock()
_current: ServingModel | None = None
_earlier: ServingModel | None = None  # the last non-champion version asked for by version_model


def serving_model() -> ServingModel:
    """The champion's classifier, loading it on first use or after a promotion (one query per call)."""
    global _current
    champion = ensure_champion(current_app.config["MODEL_DIR"])
    with _lock:
        if not _holds(_current, champion):
            _current = _load(champion)
        # The threshold may be recalibrated, and the card gain quality limits, without a new artifact.
        _current.alert_threshold = champion.alert_threshold
        _current.quality_limits = QualityLimits.from_card(champion.card or {})
        return _current


def version_model(version_id: int) -> ServingModel:
    """The classifier of one registered version: the champion's when it is that version, otherwise loaded
    on demand (one such version kept), so work about an earlier prediction uses the model that made it."""
    global _earlier
    champion = serving_model()
    if champion.version_id == version_id:
        return champion
    with _lock:
        version = db.session.get(ModelVersion, version_id)
        if version is None:
            raise LookupError(f"model version {version_id} is not registered")
        if not _holds(_earlier, version):
            _earlier = _load(version)
        return _earlier


def _holds(model: ServingModel | None, version: ModelVersion) -> bool:
    """Whether the loaded model is this version (the hash too: a restored database may reuse an id)."""
    return model is not None and (model.version_id, model.artifact_sha256) == (version.id, version.artifact_sha256)


def _load(version: ModelVersion) -> ServingModel:
    from worker.classifier.predictor import Classifier

    artifact = resolve_path(version.artifact_path)
    actual = file_sha256(artifact)
    if actual != version.artifact_sha256:
        raise RuntimeError(f"{artifact} does not match the registered hash of {version.label}; refusing to serve it")
    log.info("loading model %s from %s", version.label, artifact)
    classifier = Classifier(str(artifact), version.class_names, version.input_size,
                            runtime=current_app.config["INFERENCE_RUNTIME"],
                            cache_dir=current_app.config["MODEL_CACHE_DIR"])
    log.info("serving %s with %s", version.label, classifier.runtime)
    return ServingModel(version.id, version.label, list(version.class_names), version.input_size,
                        version.alert_threshold, classifier, artifact_sha256=version.artifact_sha256)
