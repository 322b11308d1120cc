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
    step = max(1, -(-full_width // width))
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


def image_problem(image_rgb: np.ndarray, limits: AssessLimits) -> str | None:
    """The picture's own problem, before the model runs: (H, W, 3) uint8 RGB -> reason or None.
    A picture of another shape cannot be judged at all: BadFrame."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8 or not image_rgb.size:
        raise BadFrame("not_rgb", f"expected an (H, W, 3) uint8 RGB frame, got {image_rgb.dtype} {tuple(image_rgb.shape)}")
    if min(image_rgb.shape[:2]) < limits.min_frame_side:
        raise BadFrame("frame_too_small", f"a {image_rgb.shape[1]}x{image_rgb.shape[0]} frame is below the "
                                          f"{limits.min_frame_side} px minimum (assess.min_frame_side)")
    if not limits.picture_checks:
        return None
    # OpenCV throughout: each step runs in C with the GIL released (the lanes' threads share it)
    small = _thumbnail(image_rgb)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    # exposure first: a dark picture has little colour left, and is a problem of the picture
    bright = cv2.countNonZero(cv2.threshold(grey, 245, 1, cv2.THRESH_BINARY)[1]) / grey.size
    if cv2.mean(grey)[0] < limits.dark_luma or bright > limits.bright_share:
        return IMAGE_QUALITY
    red, green, blue = cv2.split(small)
    colour = (cv2.mean(cv2.absdiff(red, green))[0] + cv2.mean(cv2.absdiff(green, blue))[0]) / 2
    if colour < limits.min_colour:
        return NOT_A_PHOTOGRAPH
    _, spread = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))
    if float(spread[0, 0]) ** 2 < limits.min_sharpness:
        return IMAGE_QUALITY
    return None


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
