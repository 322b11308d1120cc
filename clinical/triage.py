"""Triage: burn-centre referral flags from findings, and the priority lane of each source.

Referral flags follow the image-derivable American Burn Association criteria: any
full-thickness burn, partial-thickness burn over 10 % TBSA, a special body region. They are
decision support: a clinician decides.
"""
from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from holoburn.clinical.burn_size import SPECIAL_REGIONS
from holoburn.clinical.errors import BadConfig

DECISION_SUPPORT_NOTE = "decision support only; a clinician decides"


class Lane(enum.IntEnum):
    """Priority lanes, most urgent first (lower value = served first)."""

    EMERGENCY = 0
    URGENT = 1
    ROUTINE = 2
    BATCH_SCREENING = 3

    @classmethod
    def parse(cls, name: str) -> "Lane":
        try:
            return cls[str(name).upper()]
        except KeyError:
            raise ValueError(f"unknown lane {name!r}; choose one of {', '.join(l.name for l in cls)}") from None


@dataclass(frozen=True)
class TriagePolicy:
    partial_tbsa_threshold_pct: float = 10.0  # ABA: partial-thickness burn over 10 % TBSA
    # share of visible skin a class must cover before it counts as present (ignores speckle)
    min_share_of_skin: float = 0.002


def referral_flags(findings: dict, *, body_region: str | None = None, policy: TriagePolicy = TriagePolicy()) -> list[str]:
    """Image-derived burn-centre referral criteria met by one frame's findings."""
    pixels = findings["pixels"]
    skin = sum(v for k, v in pixels.items() if k != "background")
    flags = []
    if skin and pixels["full_thickness"] / skin >= policy.min_share_of_skin:
        flags.append("full_thickness_present")
    tbsa = findings.get("tbsa_pct")
    if tbsa is not None and tbsa > policy.partial_tbsa_threshold_pct:
        flags.append("partial_thickness_tbsa_over_threshold")
    burned = sum(pixels[k] for k in ("superficial", "superficial_partial", "deep_partial", "full_thickness"))
    if body_region in SPECIAL_REGIONS and skin and burned / skin >= policy.min_share_of_skin:
        flags.append("special_region")
    return flags


def triage_level(findings: dict, *, body_region: str | None = None, policy: TriagePolicy = TriagePolicy()) -> dict:
    """`refer` when a referral criterion is met, `assess` for other visible burn, `none` otherwise."""
    flags = referral_flags(findings, body_region=body_region, policy=policy)
    share = findings.get("burn_share_of_skin") or 0.0
    level = "refer" if flags else ("assess" if share >= policy.min_share_of_skin else "none")
    return {"level": level, "flags": flags, "note": DECISION_SUPPORT_NOTE}


URGENT_FLAGS = {"full_thickness_present": "full-thickness", "partial_thickness_tbsa_over_threshold": "partial-thickness TBSA"}


@dataclass
class LaneRouter:
    """Lane of each source: its configured default, raised to EMERGENCY on evidence that
    persists (a referral-grade finding in `evidence` of the last `window` assessed frames), lowered
    back after `calm_frames` assessed frames without one. One frame is not evidence: a clinician
    who sees EMERGENCY must be able to read why (`reason_for`)."""

    defaults: dict[str, Lane]
    fallback: Lane = Lane.ROUTINE
    escalate: bool = True
    calm_frames: int = 30
    evidence: int = 3
    window: int = 5
    _escalated: dict[str, int] = field(default_factory=dict)  # source -> calm frames seen so far
    _recent: dict[str, deque] = field(default_factory=dict)  # source -> urgent flags of its last frames
    changes: list[dict] = field(default_factory=list)  # every change of lane, with its reason

    def __post_init__(self):
        if not 1 <= self.evidence <= self.window:
            raise BadConfig(f"triage: escalate_after ({self.evidence}) must be between 1 and escalate_window "
                            f"({self.window})")

    def lane_for(self, source: str) -> Lane:
        if source in self._escalated:
            return Lane.EMERGENCY
        return self.defaults.get(source, self.fallback)

    def reason_for(self, source: str) -> str:
        """Why the source is in EMERGENCY and for how long, in words ("" when it is not escalated)."""
        if source not in self._escalated:
            return ""
        recent = self._recent.get(source, ())
        counts = {name: sum(name in flags for flags in recent) for name in URGENT_FLAGS}
        flag = max(counts, key=counts.get)
        calm = self._escalated[source]
        if counts[flag]:
            text = f"{URGENT_FLAGS[flag]} in {counts[flag]} of last {len(recent)} frames"
        else:
            text = f"no referral-grade burn in the last {calm} frames"
        return text + (f"; back after {self.calm_frames - calm} more" if calm else "")

    def observe(self, source: str, frame_index: int, triage: dict) -> None:
        """Feed back one assessed frame's triage; escalate or calm down the source's lane."""
        if not self.escalate:
            return
        urgent = tuple(f for f in triage["flags"] if f in URGENT_FLAGS)
        recent = self._recent.setdefault(source, deque(maxlen=self.window))
        recent.append(urgent)
        before = self.lane_for(source)
        if source in self._escalated:
            self._escalated[source] = 0 if urgent else self._escalated[source] + 1
            if self._escalated[source] >= self.calm_frames:
                del self._escalated[source]
        elif sum(bool(flags) for flags in recent) >= self.evidence:
            self._escalated[source] = 0
        after = self.lane_for(source)
        if after != before:
            reason = self.reason_for(source) if after is Lane.EMERGENCY else f"calm for {self.calm_frames} frames"
            self.changes.append({"source": source, "frame": frame_index, "from": before.name, "to": after.name, "reason": reason})
