"""Where the model looked: occlusion sensitivity for the melanoma probability, drawn over the image.

Grey patches slide over the picture and the map records how much each one lowers the melanoma
probability. It needs only forward passes (one batch), so it works for any network and any Keras
backend, and it answers the dermatologist's question directly: which region made this an alert.
"""

import io

import numpy as np
from PIL import Image

from worker.classifier.choices import MELANOMA
from worker.classifier.predictor import Classifier

GRID = 8
PATCH_FRACTION = 1 / 5
# Heatmaps are for the eye: drawn at most this many pixels a side, whatever the upload's size.
MAX_SIDE = 1024


def occlusion_map(classifier: Classifier, image: np.ndarray, class_name: str = MELANOMA,
                  grid: int = GRID) -> tuple[np.ndarray, float]:
    """A grid x grid map of probability drops (>= 0) for class_name, and the unoccluded probability.

    image is a uint8 array at the classifier's input size.
    """
    target = classifier.class_names.index(class_name)
    size = image.shape[0]
    patch = max(2, int(size * PATCH_FRACTION))
    fill = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    centres = np.linspace(0, size, grid, endpoint=False) + size / (2 * grid)
    occluded = []
    for row in centres:
        for column in centres:
            copy = image.copy()
            top, left = int(max(0, row - patch / 2)), int(max(0, column - patch / 2))
            copy[top:top + patch, left:left + patch] = fill
            occluded.append(copy)
    probabilities = classifier.predict([image, *occluded])[:, target]
    baseline = float(probabilities[0])
    drops = np.clip(baseline - probabilities[1:], 0.0, None).reshape(grid, grid)
    return drops, baseline


def heatmap_png(original: Image.Image, drops: np.ndarray, opacity: float = 0.5) -> bytes:
    """The map, smoothed to the picture's size in red over it, as PNG bytes."""
    picture = original.convert("RGB")
    scale = drops.max()
    normalised = (drops / scale) if scale > 0 else drops
    heat = Image.fromarray((normalised * 255).astype(np.uint8)).resize(picture.size, Image.Resampling.BICUBIC)
    weight = np.asarray(heat, dtype=np.float32)[..., None] / 255.0 * opacity
    red = np.zeros((*weight.shape[:2], 3), dtype=np.float32)
    red[..., 0] = 255.0
    blended = np.asarray(picture, dtype=np.float32) * (1 - weight) + red * weight
    out = io.BytesIO()
    Image.fromarray(blended.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def explain_bytes(classifier: Classifier, data: bytes, formats: frozenset[str] | None = None,
                  max_pixels: int | None = None) -> tuple[bytes, float]:
    """PNG heatmap for an image file's bytes, and its melanoma probability; formats and max_pixels are the
    readable-image rule, as for images.decode_image."""
    from worker.classifier.images import decode_image

    drops, probability = occlusion_map(classifier, decode_image(data, classifier.input_size, formats, max_pixels))
    with Image.open(io.BytesIO(data)) as picture:
        picture.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEGs decode straight at a reduced scale
        picture = picture.convert("RGB")
        picture.thumbnail((MAX_SIDE, MAX_SIDE))
        return heatmap_png(picture, drops), probability
