"""In-process classification of files, for `melanoma predict`: the same decoding and model, no server."""

import hashlib
from pathlib import Path

from web.config import Config
from web.results import result_row
from worker.classifier.choices import MELANOMA
from worker.classifier.images import decode_images
from worker.classifier.predictor import load_classifier
from worker.classifier.quality import QualityLimits, measure_quality, quality_warning

CHUNK = 64


def predict_files(files: list[Path], model_dir: str | Path) -> list[dict]:
    """One result row per file, in order; unreadable files are rejected rows with the reason. The model runs,
    and images are read, as the settings say, as in a serving worker."""
    card, classifier = load_classifier(model_dir, runtime=Config.INFERENCE_RUNTIME, cache_dir=Config.MODEL_CACHE_DIR)
    threshold, limits = card["alert_threshold"], QualityLimits.from_card(card)
    melanoma = classifier.class_names.index(MELANOMA)
    label = f"{card['name']}:{card['version']}"
    rows: list[dict | None] = [None] * len(files)
    for start in range(0, len(files), CHUNK):
        chunk = [files[position].read_bytes() for position in range(start, min(start + CHUNK, len(files)))]
        arrays, positions = [], []
        for position, data, decoded in zip(range(start, start + len(chunk)), chunk,
                                           decode_images(lambda data: data, chunk, classifier.input_size,
                                                         Config.IMAGE_FORMATS, Config.MAX_IMAGE_PIXELS),
                                           strict=True):
            sha256 = hashlib.sha256(data).hexdigest()
            if isinstance(decoded, Exception):
                rows[position] = result_row(str(files[position]), "rejected", sha256, rejection_reason=str(decoded))
            else:
                arrays.append(decoded)
                positions.append((position, sha256))
        for (position, sha256), array, probabilities in zip(positions, arrays, classifier.predict(arrays),
                                                            strict=True):
            melanoma_probability = float(probabilities[melanoma])
            rows[position] = result_row(
                str(files[position]), "done", sha256,
                predicted_class=classifier.class_names[int(probabilities.argmax())],
                melanoma_probability=melanoma_probability, alert=melanoma_probability >= threshold,
                quality_warning=quality_warning(measure_quality(array), limits), model_version=label,
            )
    return rows
