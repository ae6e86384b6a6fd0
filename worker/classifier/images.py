"""Decoding stored image bytes into the fixed-size arrays the CNN is fed, in training and in serving alike."""

import io
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

T = TypeVar("T")

# Said as the web's check of an upload says them (web/ingest.py), which cannot be imported from here.
NOT_AN_IMAGE = "not an image we can read: the content is not a JPEG or PNG picture"
TOO_LARGE = "the picture claims more pixels than any dermoscopic photograph (a decompression bomb?)"


class UnreadableImage(ValueError):
    """The bytes are not an image we can classify; the message says why, for the hospital's results."""


def decode_image(data: bytes, input_size: int, formats: frozenset[str] | None = None,
                 max_pixels: int | None = None) -> np.ndarray:
    """Decode image bytes into an RGB uint8 array of input_size x input_size (antialiased resize).

    formats (Pillow's names) and max_pixels are what counts as a readable image: the serving workers pass the
    settings the web checks uploads by (IMAGE_FORMATS, MAX_IMAGE_PIXELS), so both apply one rule; None
    accepts what Pillow reads below its own decompression-bomb limit.
    """
    if not data:
        raise UnreadableImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if formats is not None and image.format not in formats:
                    raise UnreadableImage(f"unsupported image format {image.format}; send JPEG or PNG")
                if max_pixels is not None and image.width * image.height > max_pixels:
                    raise UnreadableImage(f"image is {image.width}x{image.height}, larger than we accept")
                # A JPEG decodes at 1/2, 1/4 or 1/8 scale where that still leaves input_size a side: a
                # 12-megapixel photograph then decodes about 9 times faster, to within a grey level or two.
                image.draft("RGB", (input_size, input_size))
                image.load()
                rgb = _eight_bit_rgb(image)
    except UnreadableImage:
        raise
    except UnidentifiedImageError as error:
        raise UnreadableImage(NOT_AN_IMAGE) from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImage(TOO_LARGE) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(f"damaged image data: {error}") from error
    resized = rgb.resize((input_size, input_size), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(resized, dtype=np.uint8)


def decode_images(read: Callable[[T], bytes], keys: list[T], input_size: int, formats: frozenset[str] | None = None,
                  max_pixels: int | None = None) -> list[np.ndarray | Exception]:
    """decode_image(read(key)) for every key, on every core: PIL decodes and resizes outside the GIL, so
    two threads decode a camera's photographs about twice as fast as one. Each entry is the array, or the
    UnreadableImage or OSError (a missing file, say) that tells why there is none."""

    def one(key: T) -> np.ndarray | Exception:
        try:
            return decode_image(read(key), input_size, formats, max_pixels)
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
