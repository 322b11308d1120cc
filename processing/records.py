"""The per-frame result record of results.jsonl (see README: output contract)."""
from __future__ import annotations

from holoburn.processing.frame import Frame


def result_record(frame: Frame, latency_ms: float, backend: dict) -> dict:
    """The JSON-lines record of one frame that entered the graph. backend: backend, precision."""
    findings = frame.findings or {}
    return {
        "source": frame.source,
        "frame": frame.index,
        "timestamp_s": round(frame.timestamp_s, 6),
        "lane": frame.lane,
        "lane_reason": frame.extra.get("lane_reason"),
        "backend": backend.get("backend"),
        "precision": backend.get("precision"),
        "status": frame.status,
        "assessable": findings.get("assessable") if frame.ok else None,
        "not_assessable_reason": findings.get("not_assessable_reason"),
        "skin_confidence": _rounded(findings.get("skin_confidence")),
        "pixels": findings.get("pixels"),
        "uncertain_pixels": findings.get("uncertain_pixels"),  # burn the model is unsure of: no depth
        "burn_share_of_skin": findings.get("burn_share_of_skin"),
        "tbsa_share_of_skin": findings.get("tbsa_share_of_skin"),
        "tbsa_pct": findings.get("tbsa_pct"),
        "area_cm2": findings.get("area_cm2"),
        "triage": findings.get("triage"),
        "latency_ms": round(latency_ms, 3),
        "stage_ms": {k: round(v, 3) for k, v in frame.stage_ms.items()},
        # where the frame came from inside its source (DICOM: de-identified instance, frame in file)
        "origin": dict(frame.info.origin) or None,
    }


def _rounded(value, digits: int = 4):
    return None if value is None else round(float(value), digits)
