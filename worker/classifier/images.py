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
