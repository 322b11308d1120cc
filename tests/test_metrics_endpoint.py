"""The Prometheus endpoint: a real HTTP server on 127.0.0.1 (a free port), scraped with urllib and
read with Prometheus' own text parser; fed through the results writer's observer by hand and by a real
Holoscan run of the pipeline. Loopback traffic only; every wait is bounded."""
from __future__ import annotations

import argparse
import time
import urllib.request

import pytest

pytest.importorskip("prometheus_client", reason="prometheus-client is a runtime dependency of the metrics endpoint")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from holoburn.app.run.metrics_endpoint import DEFAULT_HOST, PipelineMetrics, is_loopback, probe, run_health  # noqa: E402
from holoburn.processing.frame import Frame  # noqa: E402
from holoburn.processing.records import result_record  # noqa: E402


def scrape(url: str) -> dict:
    """{(sample name, sorted label items): value} from one GET of the endpoint."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def record(index, *, source="camera:/dev/video0", lane="ROUTINE", status="ok", latency_ms=20.0, backend="onnxruntime"):
    """A result record made the way the results writer makes it, from a Frame."""
    frame = Frame.of(source, index, index / 30, lane=lane, status=status)
    frame.stage_ms = {"preprocess": 2.0, "inference": 11.0} if status == "ok" else {}
    return frame, result_record(frame, latency_ms, {"backend": backend, "precision": "fp32"})


@pytest.fixture
def metrics():
    with PipelineMetrics() as m:
        m.start(port=0)  # default host: loopback
        yield m


def test_serves_on_loopback_by_default(metrics):
    assert DEFAULT_HOST == "127.0.0.1" and metrics.host == "127.0.0.1" and metrics.port > 0
    assert metrics._server.server_address[0] == "127.0.0.1"
    assert metrics.url == f"http://127.0.0.1:{metrics.port}/metrics"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")


def test_counts_frames_by_source_lane_and_drop_reason(metrics):
    metrics.describe(model_id="burn_unet_v1", backend="onnxruntime", precision="fp32", device="cpu")
    for i in range(3):
        metrics.observer(*record(i))
    metrics.observer(*record(3, status="decode_error"))
    metrics.observer(*record(4, status="no_signal"))
    metrics.observer(*record(0, source="video:case.mp4", lane="URGENT", latency_ms=40.0))
    s = scrape(metrics.url)
    cam = "camera:/dev/video0"
    assert value(s, "holoburn_frames_in_total", source=cam) == 5
    assert value(s, "holoburn_frames_in_total", source="video:case.mp4") == 1
    assert value(s, "holoburn_frames_processed_total", source=cam, lane="ROUTINE") == 3
    assert value(s, "holoburn_frames_processed_total", source="video:case.mp4", lane="URGENT") == 1
    assert value(s, "holoburn_frames_dropped_total", source=cam, reason="decode_error") == 1
    assert value(s, "holoburn_frames_dropped_total", source=cam, reason="no_signal") == 1
    # latency per lane (and backend), in seconds; dropped frames are not in it
    assert value(s, "holoburn_frame_latency_seconds_count", lane="ROUTINE", backend="onnxruntime") == 3
    assert value(s, "holoburn_frame_latency_seconds_sum", lane="ROUTINE", backend="onnxruntime") == pytest.approx(0.060)
    assert value(s, "holoburn_frame_latency_seconds_bucket", lane="ROUTINE", backend="onnxruntime", le="0.02") == 3
    assert value(s, "holoburn_frame_latency_seconds_bucket", lane="URGENT", backend="onnxruntime", le="0.033") == 0
    assert value(s, "holoburn_frame_latency_seconds_bucket", lane="URGENT", backend="onnxruntime", le="0.05") == 1
    assert value(s, "holoburn_stage_latency_seconds_count", stage="inference") == 4
    assert value(s, "holoburn_pipeline_info", model_id="burn_unet_v1", backend="onnxruntime",
                 precision="fp32", device="cpu") == 1
    assert time.time() - value(s, "holoburn_last_frame_timestamp_seconds") < 60


def test_counts_escalations_not_the_way_back(metrics):
    lanes = ["ROUTINE", "ROUTINE", "EMERGENCY", "EMERGENCY", "ROUTINE", "URGENT", "EMERGENCY"]
    for i, lane in enumerate(lanes):
        metrics.observer(*record(i, lane=lane))
    metrics.observer(*record(0, source="other", lane="EMERGENCY"))  # a first frame is no escalation
    s = scrape(metrics.url)
    cam = "camera:/dev/video0"
    assert value(s, "holoburn_lane_escalations_total", source=cam, from_lane="ROUTINE", to_lane="EMERGENCY") == 1
    assert value(s, "holoburn_lane_escalations_total", source=cam, from_lane="ROUTINE", to_lane="URGENT") == 1
    assert value(s, "holoburn_lane_escalations_total", source=cam, from_lane="URGENT", to_lane="EMERGENCY") == 1
    assert not [k for k in s if k[0] == "holoburn_lane_escalations_total" and ("to_lane", "ROUTINE") in k[1]]
    assert not [k for k in s if k[0] == "holoburn_lane_escalations_total" and ("source", "other") in k[1]]


def test_queue_depth_and_pool_memory_hooks(metrics):
    waiting = [1, 2, 3]
    metrics.set_queue_depth("ROUTINE", 7)
    metrics.watch_queue_depth("EMERGENCY", lambda: len(waiting))
    metrics.set_pool_bytes_in_use("emergency", 64 << 20)
    metrics.watch_pool_bytes_in_use("routine", lambda: 1234)
    s = scrape(metrics.url)
    assert value(s, "holoburn_queue_depth", queue="ROUTINE") == 7
    assert value(s, "holoburn_queue_depth", queue="EMERGENCY") == 3
    assert value(s, "holoburn_pool_bytes_in_use", pool="emergency") == 64 << 20
    assert value(s, "holoburn_pool_bytes_in_use", pool="routine") == 1234
    waiting.append(4)  # read again at the next scrape
    assert value(scrape(metrics.url), "holoburn_queue_depth", queue="EMERGENCY") == 4


def test_each_instance_has_its_own_registry(metrics):
    with PipelineMetrics() as other:
        other.start(port=0)
        metrics.observer(*record(0))
        assert value(scrape(metrics.url), "holoburn_frames_in_total", source="camera:/dev/video0") == 1
        assert value(scrape(other.url), "holoburn_frames_in_total", source="camera:/dev/video0") is None


def test_a_taken_port_is_a_clear_error(metrics):
    with PipelineMetrics() as other:
        with pytest.raises(OSError, match=f"127.0.0.1:{metrics.port}.*metrics.port"):
            other.start(port=metrics.port)


def test_stop_closes_the_port():
    m = PipelineMetrics()
    m.start(port=0)
    url = m.url
    scrape(url)
    m.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_health_probe(metrics, capsys):
    ok, message = probe(metrics.url, max_age_s=30)
    assert not ok and "no frame" in message
    metrics.observer(*record(0))
    ok, message = probe(metrics.url, max_age_s=30)
    assert ok, message
    metrics.last_frame.set(time.time() - 120)  # the camera stalled two minutes ago
    ok, message = probe(metrics.url, max_age_s=30)
    assert not ok and "more than 30 s" in message
    assert run_health(argparse.Namespace(url=metrics.url, max_age=300.0, timeout=2.0)) == 0
    assert capsys.readouterr().out.startswith("healthy: ")
    assert run_health(argparse.Namespace(url=metrics.url, max_age=30.0, timeout=2.0)) == 1


def test_health_probe_without_an_endpoint():
    m = PipelineMetrics()
    port = m.start(port=0)
    m.stop()  # nothing listens there now
    ok, message = probe(f"http://127.0.0.1:{port}/metrics", max_age_s=30, timeout_s=2)
    assert not ok and "no metrics at" in message


def test_scraped_during_a_real_pipeline_run(tmp_path, tiny_card, red_green_video):
    """A real Holoscan run with the observer plugged into the results sink; the endpoint is scraped
    from inside the run (at frame 5) and after it, and agrees with the run's own summary."""
    from holoburn.app.config import load_config
    from holoburn.app.run.replay import replay

    metrics = PipelineMetrics()
    metrics.start(port=0)
    mid_run = {}

    def scrape_at_frame_5(frame, rec):
        if frame.index == 5:
            mid_run.update(scrape(metrics.url))

    try:
        config = load_config(None, {"source.location": f"video:{red_green_video}", "inference.model": str(tiny_card),
                                    "inference.backend": "onnxruntime",
                                    # three passes: the escalation evidence (3 of 5 frames) comes back while frames flow
                                    "source.loop": True, "source.max_frames": 36})
        summary = replay(config, [config["source"]["location"]], tmp_path / "out",
                         observers=(metrics.observer, scrape_at_frame_5))
        metrics.describe(model_id=summary["model_id"], backend=summary["backend"],
                         backend_version=summary["backend_version"], precision=summary["precision"],
                         device=summary["device"])
        after = scrape(metrics.url)
    finally:
        metrics.stop()
    source = summary["source"]
    assert value(mid_run, "holoburn_frames_in_total", source=source) == 6  # frames 0..5
    assert value(after, "holoburn_frames_in_total", source=source) == summary["frames_in"] == 36
    processed = sum(v for (name, labels), v in after.items() if name == "holoburn_frames_processed_total")
    assert processed == summary["processed"]
    # the red half is full thickness: the source is raised from ROUTINE to EMERGENCY once
    assert value(after, "holoburn_lane_escalations_total", source=source, from_lane="ROUTINE", to_lane="EMERGENCY") == 1
    latency_count = sum(v for (name, _), v in after.items() if name == "holoburn_frame_latency_seconds_count")
    assert latency_count == summary["processed"]
    assert value(after, "holoburn_pipeline_info", model_id="tiny", backend="onnxruntime",
                 backend_version=summary["backend_version"], precision="fp32", device="cpu") == 1
