"""How far an image's score can be trusted: the dermatoscope's field of view, and the sharpness,
illumination and overexposure the network gets, against limits measured on the training images."""

from dataclasses import dataclass

import numpy as np

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
    the middle band raises it and can hide vignetting. 1.0 where the field has too little edge to judge."""
    grey = image.astype(np.float32) @ _GREY
    inside = field_of_view(image) if inside is None else inside
    radius = _radius(image.shape[:2])
    edge, middle = inside & (radius > EDGE_BAND), inside & (radius > MIDDLE_BAND[0]) & (radius < MIDDLE_BAND[1])
    if edge.mean() < 0.01 or not middle.any():
        return 1.0
    return float(np.percentile(grey[edge], 90) / max(np.percentile(grey[middle], 90), 1.0))


def overexposure(image: np.ndarray, inside: np.ndarray | None = None) -> float:
    """The share of the field of view clipped to white in some channel. In the collection overexposed pictures
    come almost only from the older archive, where every melanoma comes from, so the model reads clipping as
    that source's look and benign lesions in overexposed pictures alert far more often (docs/model-card.md)."""
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
