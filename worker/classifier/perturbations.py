"""Simulated acquisition changes: how an image could look through another hospital's dermatoscope (colour
cast, vignetting, a round rim, blur, low resolution, compression, exposure, another source's colours)."""

import io

import numpy as np
from PIL import Image, ImageFilter

from worker.classifier.images import decode_image


def _cast(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) * np.array([1.12, 0.95, 0.85])
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _vignette(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    height, width = pixels.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    radius = np.hypot((y - height / 2) / (height / 2), (x - width / 2) / (width / 2)) / np.sqrt(2)
    return Image.fromarray(np.clip(pixels * (1 - 0.6 * radius ** 2)[..., None], 0, 255).astype(np.uint8))


def _rim(image: Image.Image) -> Image.Image:
    """A contact dermatoscope's round window: black outside the circle that touches the picture's sides."""
    pixels = np.asarray(image, dtype=np.float32)
    height, width = pixels.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    inside = np.hypot((y + 0.5 - height / 2) / (height / 2), (x + 0.5 - width / 2) / (width / 2)) <= 1.0
    return Image.fromarray((pixels * inside[..., None]).astype(np.uint8))


def _jpeg(image: Image.Image, quality: int = 30) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


PERTURBATIONS = {
    "colour cast": _cast,
    "vignetting": _vignette,
    "dermatoscope rim": _rim,
    "blur": lambda image: image.filter(ImageFilter.GaussianBlur(2)),
    "low resolution": lambda image: image.resize((image.width // 3, image.height // 3)).resize(image.size),
    "jpeg quality 30": _jpeg,
    "brighter": lambda image: Image.fromarray(np.clip(np.asarray(image, np.float32) * 1.3, 0, 255).astype(np.uint8)),
}


def restyle(image: Image.Image, reference: Image.Image) -> Image.Image:
    """The image with each colour channel's histogram matched to the reference's: the lesion's pattern of
    light and dark stays, the colour, exposure and contrast of the reference's dermatoscope come with it.
    Not an affine change, so no per-channel normalisation inside a model can undo it exactly."""
    pixels = np.asarray(image, dtype=np.uint8)
    style = np.asarray(reference, dtype=np.uint8)
    channels = []
    for channel in range(3):
        values, inverse, counts = np.unique(pixels[..., channel], return_inverse=True, return_counts=True)
        target_values, target_counts = np.unique(style[..., channel], return_counts=True)
        quantiles = (np.cumsum(counts) - counts / 2) / counts.sum()
        target_quantiles = (np.cumsum(target_counts) - target_counts / 2) / target_counts.sum()
        channels.append(np.interp(quantiles, target_quantiles, target_values)[inverse].reshape(pixels.shape[:2]))
    return Image.fromarray(np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8))


def swap_sources(pictures: list[Image.Image], sources: np.ndarray, seed: int = 0) -> list[Image.Image] | None:
    """Each picture restyled after a random picture of another source; None where there is one source."""
    if len(set(sources)) < 2:
        return None
    rng = np.random.default_rng(seed)
    swapped = []
    for image, source in zip(pictures, sources, strict=True):
        others = np.flatnonzero(sources != source)
        swapped.append(restyle(image, pictures[int(rng.choice(others))]))
    return swapped


def as_arrays(images: list[Image.Image], input_size: int) -> list[np.ndarray]:
    """Pictures as the worker sees them: stored losslessly, then through the serving decoder."""
    arrays = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        arrays.append(decode_image(buffer.getvalue(), input_size))
    return arrays
