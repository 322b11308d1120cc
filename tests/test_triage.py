import pytest

from holoburn.clinical.burn_size import burn_findings
from holoburn.clinical.errors import BadConfig
from holoburn.clinical.triage import Lane, LaneRouter, TriagePolicy, triage_level


def test_full_thickness_means_refer():
    t = triage_level(burn_findings([0, 90, 0, 0, 0, 10]))
    assert t["level"] == "refer" and "full_thickness_present" in t["flags"]
    assert "decision support" in t["note"]


def test_large_partial_thickness_tbsa_means_refer():
    f = burn_findings([0, 20, 0, 80, 0, 0], region_pct=18.0)  # 14.4 % TBSA
    assert triage_level(f)["flags"] == ["partial_thickness_tbsa_over_threshold"]
    small = burn_findings([0, 80, 0, 20, 0, 0], region_pct=18.0)  # 3.6 %
    assert triage_level(small)["level"] == "assess"


def test_special_region_and_speckle():
    f = burn_findings([0, 95, 5, 0, 0, 0])
    assert triage_level(f, body_region="hand")["flags"] == ["special_region"]
    assert triage_level(f, body_region="left_arm")["level"] == "assess"
    speckle = burn_findings([0, 100000, 0, 0, 0, 3])  # 3 px of full thickness: noise
    assert triage_level(speckle, policy=TriagePolicy(min_share_of_skin=0.002))["level"] == "none"


def test_router_escalates_on_persistent_evidence_and_calms_down():
    router = LaneRouter(defaults={"cam": Lane.ROUTINE}, calm_frames=3, evidence=3, window=5)
    refer = {"flags": ["full_thickness_present"]}
    calm = {"flags": []}
    assert router.lane_for("cam") is Lane.ROUTINE
    for i, triage in enumerate((refer, calm, refer)):  # two of three: not yet evidence
        router.observe("cam", i, triage)
        assert router.lane_for("cam") is Lane.ROUTINE and router.reason_for("cam") == ""
    router.observe("cam", 3, refer)  # three of the last four
    assert router.lane_for("cam") is Lane.EMERGENCY
    assert router.reason_for("cam") == "full-thickness in 3 of last 4 frames"
    for i in range(2):
        router.observe("cam", 4 + i, calm)
        assert router.lane_for("cam") is Lane.EMERGENCY
    assert router.reason_for("cam") == "full-thickness in 2 of last 5 frames; back after 1 more"
    router.observe("cam", 6, calm)
    assert router.lane_for("cam") is Lane.ROUTINE
    assert [(c["from"], c["to"]) for c in router.changes] == [("ROUTINE", "EMERGENCY"), ("EMERGENCY", "ROUTINE")]
    assert router.changes[0]["reason"] == "full-thickness in 3 of last 4 frames"
    with pytest.raises(BadConfig):
        LaneRouter(defaults={}, evidence=6, window=5)


def test_lane_names():
    assert Lane.parse("emergency") is Lane.EMERGENCY
    assert Lane.EMERGENCY < Lane.ROUTINE
    with pytest.raises(ValueError, match="unknown lane"):
        Lane.parse("asap")


def test_one_frame_false_alarms_never_escalate():
    """A full-thickness call on one frame in three (a glint, a dressing) is not evidence."""
    router = LaneRouter(defaults={"cam": Lane.ROUTINE}, calm_frames=3, evidence=3, window=5)
    refer, calm = {"flags": ["full_thickness_present"]}, {"flags": []}
    for i in range(60):
        router.observe("cam", i, refer if i % 3 == 0 else calm)
        assert router.lane_for("cam") is Lane.ROUTINE
    assert router.changes == []
