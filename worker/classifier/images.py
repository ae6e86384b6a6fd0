"""Decoding stored image bytes into the fixed-size arrays the CNN is fed, in training and in serving alike."""

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

# Dermoscopic photographs are at most a few tens of megapixels; larger claims are decompression bombs.
MAX_PIXELS = 80_000_000


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
                image.load()
                rgb = image.convert("RGB")
    except UnreadableImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImage(f"not a readable image: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"damaged image data: {error}") from error
    resized = rgb.resize((input_size, input_size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(resized, dtype=np.uint8)


# A dermatoscope's field of view: pixels darker than FIELD_DARKNESS (a share of full scale) in every channel
# and outside the central disc of radius FIELD_CENTRE (a share of the half width) are the black rim of a
# round window, not skin. network.ChannelStandardisation(field_only=True) applies the same rule.
FIELD_DARKNESS = 0.08
FIELD_CENTRE = 0.75
# Pixels of the field this close to the rim are left out of the sharpness: the rim's edge is not detail.
RIM_MARGIN = 3

# An image counts as blurred when it is less sharp than all but this percentage of the training images.
SHARPNESS_PERCENTILE = 1.0
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def field_of_view(image: np.ndarray) -> np.ndarray:
    """A boolean mask of the pixels inside the dermatoscope's field of view (all of them where there is no rim)."""
    height, width = image.shape[:2]
    rows = (np.arange(height) + 0.5) / height * 2.0 - 1.0
    columns = (np.arange(width) + 0.5) / width * 2.0 - 1.0
    periphery = rows[:, None] ** 2 + columns[None, :] ** 2 > FIELD_CENTRE**2
    return ~(periphery & (image.max(axis=-1) < FIELD_DARKNESS * 255))


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of a decoded image's grey levels: how much fine detail reaches the network.

    Measured on the array at the model's input size, so it scores the detail the network gets: focus blur,
    motion and an upscaled low-resolution picture all lower it; a large sharp picture, shrunk, does not.
    Only inside the field of view: a round window's sharp black edge would make any picture look sharp.
    """
    grey = image.astype(np.float32) @ _GREY
    laplacian = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4.0 * grey[1:-1, 1:-1])
    inside = field_of_view(image)
    for _ in range(RIM_MARGIN + 1):  # shrink the field away from the rim, a pixel at a time
        shrunk = inside.copy()
        shrunk[1:-1, 1:-1] &= inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
        inside = shrunk
    inside = inside[1:-1, 1:-1]
    return float(laplacian[inside].var() if inside.mean() > 0.25 else laplacian.var())


def sharpness_floor(images: np.ndarray) -> float:
    """The sharpness below which SHARPNESS_PERCENTILE percent of these (training) images fall."""
    return float(np.percentile([sharpness(image) for image in images], SHARPNESS_PERCENTILE))


def quality_warning(image: np.ndarray, floor: float | None) -> str | None:
    """Why this image's score is less trustworthy than usual, or None; None too for models with no floor."""
    return None if floor is None else sharpness_warning(sharpness(image), floor)


def sharpness_warning(value: float, floor: float | None) -> str | None:
    """quality_warning for an image whose sharpness is already measured."""
    if floor is None or value >= floor:
        return None
    return (f"blurred or low resolution (sharpness {value:.1f}, below {floor:.1f}): melanoma scores run low on "
            "such images, so no alert does not mean no melanoma; retake the image or have it reviewed")
