"""Is this frame something the model can judge? Decided before any number counts.

A burn-assessment aid sees whatever the camera sees: a face, a blanket, a CT on a screen, a
photograph of a street. A confident false "refer" costs a transfer and the clinician's trust, so
a frame gets numbers only when it is assessable; otherwise it carries one reason:

| reason            | decided from                                                             |
|-------------------|--------------------------------------------------------------------------|
| not_a_photograph  | the picture has no colour (CT, MR, X-ray, ultrasound, greyscale video)   |
| image_quality     | too dark, overexposed or blurred (thresholds in the config's `assess`)   |
| no_skin_in_view   | the model finds (almost) no skin                                         |
| out_of_domain     | the model is unsure where it sees skin: the mean top-class probability   |
|                   | over skin pixels is below the model card's calibrated threshold          |

The out-of-domain score was chosen by measurement (README: Assessability): on the shipped model
the mean maximum softmax over skin pixels separates its own held-in frames (2nd percentile 0.97)
from real photographs without burn (0.74-0.88) by a wide margin, wider than the mean over all
pixels or the energy score. The threshold is calibrated so that 98 % of held-in frames pass and
is written into the model card with its calibration data.

Plain functions on arrays; no Holoscan, no GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from holoburn.clinical.depth import SKIN_CLASSES
from holoburn.clinical.errors import BadFrame

NOT_A_PHOTOGRAPH = "not_a_photograph"
IMAGE_QUALITY = "image_quality"
NO_SKIN = "no_skin_in_view"
OUT_OF_DOMAIN = "out_of_domain"

#: each reason in words, as the overlay and the report say it
REASONS = {
    NOT_A_PHOTOGRAPH: "not a colour photograph",
    IMAGE_QUALITY: "image too dark, overexposed or blurred",
    NO_SKIN: "no skin in view",
    OUT_OF_DOMAIN: "outside what the model knows",
}


@dataclass(frozen=True)
class AssessLimits:
    """Thresholds (config section `assess`; the confidence threshold from the model card).

    min_colour: mean absolute channel difference (0..255) below which a picture is greyscale.
    dark_luma / bright_share: mean luma (0..255) below which a picture is too dark; share of
    near-white pixels above which it is overexposed. min_sharpness: variance of the Laplacian of
    the grey picture at 256 px width below which it is blurred. min_skin_share: share of the
    picture the model must call skin (healthy or burned). min_skin_confidence: mean top-class
    probability over skin pixels (None: not checked). min_pixel_confidence / min_region_px: a
    burn pixel whose top-class probability is lower, or whose region of one depth is smaller (in
    model-input pixels), is shown and counted as uncertain, not as a depth. min_frame_side: a
    frame whose shorter side is smaller is refused (dropped as `frame_too_small`).
    picture_checks: False skips the checks of the picture and the out-of-domain score (frames
    are still refused for their shape); for benchmarks that measure what the checks cost, never
    a config key.
    """

    min_colour: float = 4.0
    dark_luma: float = 35.0
    bright_share: float = 0.6
    min_sharpness: float = 15.0
    min_skin_share: float = 0.02
    min_skin_confidence: float | None = None
    min_pixel_confidence: float = 0.5
    min_region_px: int = 12
    min_frame_side: int = 32
    picture_checks: bool = True


def _thumbnail(image_rgb: np.ndarray, width: int = 256) -> np.ndarray:
    """Every n-th pixel, about `width` wide: no filtering, so that the check costs a fraction of a
    millisecond on a 1080p frame (it runs on every frame, the emergency lane's included). OpenCV's
    nearest-neighbour resize picks the pixels and lets other threads run meanwhile."""
    height, full_width = image_rgb.shape[:2]
    step = thumbnail_step(full_width, width)
    if step == 1:
        return np.ascontiguousarray(image_rgb)
    return cv2.resize(image_rgb, (-(-full_width // step), -(-height // step)), interpolation=cv2.INTER_NEAREST)


#: DICOM modalities that can hold a visible-light colour photograph of the body surface: external
#: camera, dermoscopy, endoscopy, microscopy, ophthalmic photography, other/secondary capture. Any
#: other Modality (CT, MR, US, CR, DX, RTDOSE, ...) is not a photograph, whatever its pixels look
#: like: a colour Doppler ultrasound or a fused PET/CT is RGB too. An allow-list, so that a
#: modality this list never heard of is refused rather than assessed.
PHOTOGRAPHIC_MODALITIES = frozenset({"XC", "DMS", "ES", "GM", "SM", "OP", "OT", "SC"})
#: photometric interpretations of colour pictures (YBR_*: JPEG-coded colour, decoded to RGB)
COLOUR_PHOTOMETRIC = ("RGB", "YBR_")


def modality_problem(modality: str | None, photometric: str | None = None) -> str | None:
    """A DICOM source's Modality or Photometric Interpretation that is not a colour photograph ->
    NOT_A_PHOTOGRAPH (None: fine, or not a DICOM source)."""
    if modality and modality.strip().upper() not in PHOTOGRAPHIC_MODALITIES:
        return NOT_A_PHOTOGRAPH
    if photometric and not photometric.strip().upper().startswith(COLOUR_PHOTOMETRIC):
        return NOT_A_PHOTOGRAPH  # MONOCHROME1/2, PALETTE COLOR
    return None


@dataclass(frozen=True)
class PictureStats:
    """What the picture checks look at, measured on a thumbnail of the frame (every n-th pixel,
    about 256 wide): `picture_stats` on the host, the same sums on the device in the GPU lanes.

    grey_mean: mean luma (0..255); bright_share: share of pixels with luma above 245; colour:
    mean absolute difference of neighbouring channels (|R-G| and |G-B|, averaged); sharpness:
    variance of the Laplacian of the grey thumbnail."""

    grey_mean: float
    bright_share: float
    colour: float
    sharpness: float

    @classmethod
    def from_sums(cls, sums) -> "PictureStats":
        """From the sums the device kernel gathers: pixels, luma, bright pixels, |R-G|, |G-B|,
        Laplacian, Laplacian squared."""
        n, luma, bright, rg, gb, lap, lap2 = (float(v) for v in sums)
        if n <= 0:
            return cls(0.0, 0.0, 0.0, 0.0)
        mean_lap = lap / n
        return cls(luma / n, bright / n, (rg / n + gb / n) / 2, max(0.0, lap2 / n - mean_lap * mean_lap))


def thumbnail_step(width: int, target: int = 256) -> int:
    """Every n-th pixel of a frame `width` wide makes a thumbnail about `target` wide."""
    return max(1, -(-width // target))


def check_frame_shape(image_rgb, limits: AssessLimits) -> None:
    """A picture of another shape cannot be judged at all: BadFrame (works on any array with a
    shape and a dtype, host or device)."""
    shape, dtype = tuple(image_rgb.shape), str(image_rgb.dtype)
    if len(shape) != 3 or shape[2] != 3 or dtype != "uint8" or not all(shape):
        raise BadFrame("not_rgb", f"expected an (H, W, 3) uint8 RGB frame, got {dtype} {shape}")
    if min(shape[:2]) < limits.min_frame_side:
        raise BadFrame("frame_too_small", f"a {shape[1]}x{shape[0]} frame is below the "
                                          f"{limits.min_frame_side} px minimum (assess.min_frame_side)")


def picture_stats(image_rgb: np.ndarray) -> PictureStats:
    """(H, W, 3) uint8 RGB on the host -> its PictureStats. OpenCV throughout: each step runs in C
    with the GIL released (the lanes' threads share it)."""
    small = _thumbnail(image_rgb)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    bright = cv2.countNonZero(cv2.threshold(grey, 245, 1, cv2.THRESH_BINARY)[1]) / grey.size
    red, green, blue = cv2.split(small)
    colour = (cv2.mean(cv2.absdiff(red, green))[0] + cv2.mean(cv2.absdiff(green, blue))[0]) / 2
    _, spread = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))
    return PictureStats(cv2.mean(grey)[0], bright, colour, float(spread[0, 0]) ** 2)


def picture_problem(stats: PictureStats, limits: AssessLimits) -> str | None:
    """The picture's own problem from its stats: reason or None. Exposure first: a dark picture
    has little colour left, and is a problem of the picture."""
    if stats.grey_mean < limits.dark_luma or stats.bright_share > limits.bright_share:
        return IMAGE_QUALITY
    if stats.colour < limits.min_colour:
        return NOT_A_PHOTOGRAPH
    if stats.sharpness < limits.min_sharpness:
        return IMAGE_QUALITY
    return None


def image_problem(image_rgb: np.ndarray, limits: AssessLimits) -> str | None:
    """The picture's own problem, before the model runs: (H, W, 3) uint8 RGB -> reason or None.
    A picture of another shape cannot be judged at all: BadFrame."""
    check_frame_shape(image_rgb, limits)
    if not limits.picture_checks:
        return None
    return picture_problem(picture_stats(image_rgb), limits)


def pixel_votes(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) logits of the picture (letterbox padding cut off) -> (H, W) uint8 top class and
    (H, W) its probability: computed once, for skin_confidence and uncertain_burn alike."""
    return logits.argmax(axis=0).astype(np.uint8), top_probability(logits)


def skin_confidence(classes: np.ndarray, top: np.ndarray) -> tuple[float, float | None]:
    """pixel_votes() -> (share of pixels called skin, mean top-class probability over those
    pixels, None when there are none)."""
    skin = np.isin(classes, SKIN_CLASSES)
    share = float(skin.mean())
    return share, (float(top[skin].mean()) if skin.any() else None)


def model_problem(skin_share: float, confidence: float | None, limits: AssessLimits) -> str | None:
    """The model's own doubt: reason or None. confidence None: not measured (no out-of-domain check)."""
    if skin_share < limits.min_skin_share:
        return NO_SKIN
    if None not in (confidence, limits.min_skin_confidence) and confidence < limits.min_skin_confidence:
        return OUT_OF_DOMAIN
    return None


def top_probability(logits: np.ndarray) -> np.ndarray:
    """(C, H, W) logits -> (H, W) probability of the top class (softmax max, computed as
    1 / sum(exp(l - max)) without making the whole softmax)."""
    top = logits.max(axis=0)
    return 1.0 / np.exp(logits - top).sum(axis=0)


def not_assessable_findings(reason: str, confidence: float | None = None) -> dict:
    """The findings of a frame that is not assessable: the reason, and no numbers at all."""
    return {"assessable": False, "not_assessable_reason": reason, "skin_confidence": confidence,
            "pixels": None, "burn_share_of_skin": None, "tbsa_share_of_skin": None, "tbsa_pct": None,
            "area_cm2": None, "triage": None}


UNCERTAIN = 255  # mask value of a burn pixel the model is not sure of: drawn grey, counted as no depth


def uncertain_burn(classes: np.ndarray, top: np.ndarray, limits: AssessLimits) -> np.ndarray:
    """pixel_votes() -> (H, W) bool: burn pixels to show and count as uncertain, because the
    model's top-class probability there is below `min_pixel_confidence` or their connected region
    of one depth is smaller than `min_region_px`."""
    from holoburn.clinical.depth import BURN_CLASSES

    unsure = (top < limits.min_pixel_confidence) & np.isin(classes, BURN_CLASSES)
    for depth in BURN_CLASSES:
        count, labels, stats, _ = cv2.connectedComponentsWithStats((classes == depth).view(np.uint8), connectivity=8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < limits.min_region_px) + 1
        if small.size:
            unsure |= np.isin(labels, small)
    return unsure
