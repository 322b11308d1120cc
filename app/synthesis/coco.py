"""Burn scenes written as a folder of photographs with COCO polygon annotations: the shape a
clinic's own annotated photos arrive in, to try `holoburn dataset import` -> `holoburn train
--data` -> `holoburn validate` end to end (`holoburn synth --coco`).

Pictures are JPEGs named `patientNNN_K.jpg` (K pictures per patient: `--case-pattern
'^(patient\\d+)_'` groups them); `annotations.json` has one category per holoburn class name and,
per picture, polygons painted in order: healthy skin over all skin, then each burn depth from the
shallowest (a deeper zone inside a shallower one is painted over it, as COCO exports paint).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from holoburn.clinical.depth import BURN_CLASSES, CLASS_NAMES, HEALTHY_SKIN


def polygons(region: np.ndarray) -> list[list[float]]:
    """COCO polygons (x0, y0, x1, y1, ...) of a boolean region's outer outlines (3 points or more)."""
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def write_coco(out_dir, pairs, pictures_per_case: int = 3, quality: int = 92) -> dict:
    """Write `pairs` of (RGB frame, class mask) as out_dir/images/*.jpg + out_dir/annotations.json."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    categories = [{"id": c, "name": CLASS_NAMES[c]} for c in (HEALTHY_SKIN, *BURN_CLASSES)]
    images, annotations = [], []
    for i, (frame, mask) in enumerate(pairs):
        name = f"patient{i // pictures_per_case:03d}_{i % pictures_per_case}.jpg"
        cv2.imwrite(str(out / "images" / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        images.append({"id": i + 1, "file_name": name, "width": int(frame.shape[1]), "height": int(frame.shape[0])})
        for cls, region in [(HEALTHY_SKIN, mask >= HEALTHY_SKIN)] + [(c, mask == c) for c in BURN_CLASSES]:
            for polygon in polygons(region):
                xs, ys = polygon[0::2], polygon[1::2]
                annotations.append({
                    "id": len(annotations) + 1, "image_id": i + 1, "category_id": cls, "iscrowd": 0,
                    "segmentation": [polygon], "area": float(cv2.contourArea(np.array(list(zip(xs, ys)), np.float32))),
                    "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                })
    coco = {"images": images, "annotations": annotations, "categories": categories,
            "info": {"description": "synthetic burn scenes (holoburn synth --coco); not clinical data"}}
    (out / "annotations.json").write_text(json.dumps(coco) + "\n")
    return coco
