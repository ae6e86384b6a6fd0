"""Decoding stored image bytes into the fixed-size arrays the CNN is fed, in training and in serving alike."""

import io
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

# Dermoscopic photographs are at most a few tens of megapixels; larger claims are decompression bombs.
MAX_PIXELS = 80_000_000
T = TypeVar("T")


class UnreadableImage(ValueError):
    """The bytes are not an image we can classify; the message says why, for the hospital's results."""


def decode_image(data: bytes, input_size: int) -> np.ndarray:
    """Decode JPEG/PNG bytes into an RGB uint8 array of input_size x input_size (antialiased resize)."""
    if not data:
        raise UnreadableImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise UnreadableImage(f"image is {image.width}x{image.height}, larger than we accept")
                # A JPEG decodes at 1/2, 1/4 or 1/8 scale where that still leaves input_size a side: a
                # 12-megapixel photograph then decodes about 9 times faster, to within a grey level or two.
                image.draft("RGB", (input_size, input_size))
                image.load()
                rgb = _eight_bit_rgb(image)
    except UnreadableImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImage(f"not a readable image: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"damaged image data: {error}") from error
    resized = rgb.resize((input_size, input_size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(resized, dtype=np.uint8)


def decode_images(read: Callable[[T], bytes], keys: list[T], input_size: int) -> list[np.ndarray | Exception]:
    """decode_image(read(key)) for every key, on every core: PIL decodes and resizes outside the GIL, so
    two threads decode a camera's photographs about twice as fast as one. Each entry is the array, or the
    UnreadableImage or OSError (a missing file, say) that tells why there is none."""

    def one(key: T) -> np.ndarray | Exception:
        try:
            return decode_image(read(key), input_size)
        except (UnreadableImage, OSError) as error:
            return error

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(one, keys))


def _eight_bit_rgb(image: Image.Image) -> Image.Image:
    """The picture as 8-bit RGB. 16-bit grey (PNG modes I;16 and I) is scaled down first: converted as it is,
    every level above 255 would clip to white and the lesion would vanish."""
    if image.mode.startswith("I;16") or image.mode == "I":
        levels = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    return image.convert("RGB")


# A dermatoscope's field of view: pixels darker than FIELD_DARKNESS (a share of full scale) in every channel
# and outside the central disc of radius FIELD_CENTRE (a share of the half width) are the black rim of a
# round window, not skin. network.ChannelStandardisation(field_only=True) applies the same rule.
FIELD_DARKNESS = 0.08
FIELD_CENTRE = 0.75
# Pixels of the field this close to the rim are left out of the sharpness: the rim's edge is not detail.
RIM_MARGIN = 3

# An image counts as blurred when it is less sharp than all but this percentage of the training images, as
# unevenly lit when its edge is darker, against its middle, than in all but this percentage of them, and as
# overexposed when more of it is clipped to white than in all but this percentage of them.
QUALITY_PERCENTILE = 1.0
# The bands illumination() compares, as radii in shares of the half width: the field's edge and its middle.
EDGE_BAND = 0.9
MIDDLE_BAND = (0.4, 0.65)
# A pixel this bright (of 255) in any channel is clipped: what the skin looked like there is lost.
CLIPPED = 250
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def field_of_view(image: np.ndarray) -> np.ndarray:
    """A boolean mask of the pixels inside the dermatoscope's field of view (all of them where there is no rim)."""
    periphery = _radius(image.shape[:2]) > FIELD_CENTRE
    return ~(periphery & (image.max(axis=-1) < FIELD_DARKNESS * 255))


def _radius(shape: tuple[int, int]) -> np.ndarray:
    """Each pixel's distance from the picture's centre, in shares of the half width and height."""
    height, width = shape
    rows = (np.arange(height) + 0.5) / height * 2.0 - 1.0
    columns = (np.arange(width) + 0.5) / width * 2.0 - 1.0
    return np.sqrt(rows[:, None] ** 2 + columns[None, :] ** 2)


def sharpness(image: np.ndarray, inside: np.ndarray | None = None) -> float:
    """Variance of the Laplacian of a decoded image's grey levels: how much fine detail reaches the network.

    Measured on the array at the model's input size, so it scores the detail the network gets: focus blur,
    motion and an upscaled low-resolution picture all lower it; a large sharp picture, shrunk, does not.
    Only inside the field of view (`inside`, field_of_view's mask): a round window's sharp black edge would
    make any picture look sharp.
    """
    grey = image.astype(np.float32) @ _GREY
    laplacian = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4.0 * grey[1:-1, 1:-1])
    inside = field_of_view(image) if inside is None else inside
    for _ in range(RIM_MARGIN + 1):  # shrink the field away from the rim, a pixel at a time
        shrunk = inside.copy()
        shrunk[1:-1, 1:-1] &= inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
        inside = shrunk
    inside = inside[1:-1, 1:-1]
    return float(laplacian[inside].var() if inside.mean() > 0.25 else laplacian.var())


def illumination(image: np.ndarray, inside: np.ndarray | None = None) -> float:
    """How bright the field of view's edge is against its middle: the 90th percentile of the grey levels
    beyond EDGE_BAND over that inside MIDDLE_BAND. The brightest pixels of a band are skin, so a dark lesion
    barely moves it; a dermatoscope's vignetting or a torch held off centre lowers it. A lesion that fills
    the middle band raises it and can hide vignetting (evaluate's vignetting: 77 % of the test split flagged).
    1.0 where the field has too little edge to judge."""
    grey = image.astype(np.float32) @ _GREY
    inside = field_of_view(image) if inside is None else inside
    radius = _radius(image.shape[:2])
    edge, middle = inside & (radius > EDGE_BAND), inside & (radius > MIDDLE_BAND[0]) & (radius < MIDDLE_BAND[1])
    if edge.mean() < 0.01 or not middle.any():
        return 1.0
    return float(np.percentile(grey[edge], 90) / max(np.percentile(grey[middle], 90), 1.0))


def overexposure(image: np.ndarray, inside: np.ndarray | None = None) -> float:
    """The share of the field of view clipped to white in some channel. In the collection, overexposed
    pictures come almost only from the older archive (over 28 % clipped: 6-8 % of its melanomas and nevi, 1
    of 596 HAM10000 pictures sampled), so the model reads clipping as that source's look, where every
    melanoma comes from: benign lesions in overexposed pictures alert far more often."""
    inside = field_of_view(image) if inside is None else inside
    return float((image.max(axis=-1) >= CLIPPED)[inside].mean()) if inside.any() else 0.0


@dataclass(frozen=True)
class Quality:
    """What limits how far an image's score can be trusted, measured as the network gets the image."""

    sharpness: float
    illumination: float
    overexposure: float


def measure_quality(image: np.ndarray) -> Quality:
    inside = field_of_view(image)
    return Quality(sharpness(image, inside), illumination(image, inside), overexposure(image, inside))


@dataclass(frozen=True)
class QualityLimits:
    """Where an image starts to get a quality warning; from the model's card (None where a model has none)."""

    sharpness: float | None = None
    illumination: float | None = None
    overexposure: float | None = None

    @classmethod
    def from_card(cls, card: dict) -> "QualityLimits":
        return cls(card.get("sharpness_floor"), card.get("illumination_floor"), card.get("overexposure_ceiling"))


def quality_limits(images: np.ndarray) -> dict[str, float]:
    """The card's limits, from these (training) images: the sharpness and illumination below which, and the
    overexposure above which, QUALITY_PERCENTILE percent of them fall."""
    measured = [measure_quality(image) for image in images]

    def percentile(name: str, share: float) -> float:
        return float(np.percentile([getattr(m, name) for m in measured], share))

    return {"sharpness_floor": percentile("sharpness", QUALITY_PERCENTILE),
            "illumination_floor": percentile("illumination", QUALITY_PERCENTILE),
            "overexposure_ceiling": percentile("overexposure", 100.0 - QUALITY_PERCENTILE)}


def quality_warning(quality: Quality, limits: QualityLimits) -> str | None:
    """Why this image's score is less trustworthy than usual, or None (always None for a model with no limits)."""
    reasons = []
    if limits.sharpness is not None and quality.sharpness < limits.sharpness:
        reasons.append(f"blurred or low resolution (sharpness {quality.sharpness:.1f}, below {limits.sharpness:.1f}):"
                       " melanoma scores run low on such images, so no alert does not mean no melanoma")
    if limits.illumination is not None and quality.illumination < limits.illumination:
        reasons.append(f"unevenly lit (the edge at {quality.illumination:.2f} of the middle's brightness, below "
                       f"{limits.illumination:.2f}): melanoma scores run high on such images, so an alert is less "
                       "certain")
    if limits.overexposure is not None and quality.overexposure > limits.overexposure:
        reasons.append(f"overexposed ({quality.overexposure:.0%} of it clipped to white, above "
                       f"{limits.overexposure:.0%}): melanoma scores run high on such images, so an alert is less "
                       "certain")
    return "; ".join(reasons) + "; retake the image or have it reviewed" if reasons else None
