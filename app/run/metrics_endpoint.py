"""Prometheus metrics of a running pipeline, served over HTTP on the loopback interface by default.

`PipelineMetrics.observer` plugs into the results writer's observers (processing/recorder.py) and counts every frame that
reaches the end of the graph; lanes and memory pools report queue depth and bytes in use through
the hook methods (`set_queue_depth`, `set_pool_bytes_in_use`, or their `watch_*` forms that are
read at scrape time). Each instance owns its own CollectorRegistry, so two pipelines (or two
tests) in one process never share counters.

Exposed (names as Prometheus shows them; latencies in seconds, the Prometheus base unit):

    holoburn_frames_in_total{source}                      every frame that entered the graph
    holoburn_frames_processed_total{source,lane}
    holoburn_frames_dropped_total{source,reason}          reason = the frame's status
    holoburn_frame_latency_seconds{lane,backend}          histogram, source to results sink
    holoburn_stage_latency_seconds{stage}                 histogram, per pipeline stage
    holoburn_lane_escalations_total{source,from_lane,to_lane}
    holoburn_queue_depth{queue}                           hook
    holoburn_pool_bytes_in_use{pool}                      hook
    holoburn_last_frame_timestamp_seconds                 unix time of the last frame counted
    holoburn_pipeline_info{model_id,backend,precision,...}

`holoburn health` reads the last of these to tell a container runtime whether frames still flow.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from holoburn.clinical.triage import Lane

log = logging.getLogger("holoburn.metrics")

DEFAULT_HOST = "127.0.0.1"
#: not 9400, which NVIDIA's DCGM exporter takes on the same GPU hosts
DEFAULT_PORT = 9479
#: seconds; dense around a 30 fps camera's 33 ms frame period, where lane behaviour shows
LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.033, 0.05, 0.066, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
LAST_FRAME_METRIC = "holoburn_last_frame_timestamp_seconds"


def _lane_rank(name: str) -> int | None:
    try:
        return int(Lane.parse(name))
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PipelineMetrics:
    """The pipeline's Prometheus metrics, with the HTTP server that exposes them."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.frames_in = Counter("holoburn_frames_in", "Frames that entered the graph", ["source"], registry=r)
        self.frames_processed = Counter("holoburn_frames_processed", "Frames segmented and reported",
                                        ["source", "lane"], registry=r)
        self.frames_dropped = Counter("holoburn_frames_dropped", "Frames not processed, by the reason recorded",
                                      ["source", "reason"], registry=r)
        self.latency = Histogram("holoburn_frame_latency_seconds", "Latency from entering the graph to the results sink",
                                 ["lane", "backend"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.stage_latency = Histogram("holoburn_stage_latency_seconds", "Time spent in each pipeline stage",
                                       ["stage"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.escalations = Counter("holoburn_lane_escalations", "Moves of a source to a more urgent lane",
                                   ["source", "from_lane", "to_lane"], registry=r)
        self.queue_depth = Gauge("holoburn_queue_depth", "Frames waiting in a queue", ["queue"], registry=r)
        self.pool_bytes = Gauge("holoburn_pool_bytes_in_use", "Bytes in use in a memory pool", ["pool"], registry=r)
        self.last_frame = Gauge("holoburn_last_frame_timestamp", "Unix time of the last frame counted",
                                unit="seconds", registry=r)
        self.info = Info("holoburn_pipeline", "Model and backend of this pipeline", registry=r)
        self._lanes: dict[str, str] = {}  # source -> lane of its previous frame
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self.host: str | None = None
        self.port: int | None = None

    # -- what the pipeline reports --------------------------------------------------------------
    def describe(self, **labels) -> None:
        """Set the info metric, e.g. describe(model_id=card.model_id, **backend.describe())."""
        self.info.info({k: "" if v is None else str(v) for k, v in labels.items()})

    def observer(self, frame, record: dict) -> None:
        """Results writer observer: count one frame from its result record (see processing/records.py)."""
        source, lane, status = record["source"], record["lane"], record["status"]
        self.frames_in.labels(source=source).inc()
        if status == "ok":
            self.frames_processed.labels(source=source, lane=lane).inc()
            self.latency.labels(lane=lane, backend=record.get("backend") or "").observe(record["latency_ms"] / 1000.0)
            for stage, ms in (record.get("stage_ms") or {}).items():
                self.stage_latency.labels(stage=stage).observe(ms / 1000.0)
        else:
            self.frames_dropped.labels(source=source, reason=status).inc()
        with self._lock:
            previous = self._lanes.get(source)
            self._lanes[source] = lane
        if previous is not None and previous != lane:
            before, after = _lane_rank(previous), _lane_rank(lane)
            if before is not None and after is not None and after < before:
                self.escalations.labels(source=source, from_lane=previous, to_lane=lane).inc()
        self.last_frame.set_to_current_time()

    def set_queue_depth(self, queue: str, depth: int) -> None:
        """Hook for a lane's queue: frames waiting now."""
        self.queue_depth.labels(queue=queue).set(depth)

    def watch_queue_depth(self, queue: str, read: Callable[[], float]) -> None:
        """Hook for a lane's queue: `read()` is called at each scrape (from the server's thread)."""
        self.queue_depth.labels(queue=queue).set_function(read)

    def set_pool_bytes_in_use(self, pool: str, nbytes: int) -> None:
        """Hook for a memory pool: bytes allocated from it now."""
        self.pool_bytes.labels(pool=pool).set(nbytes)

    def watch_pool_bytes_in_use(self, pool: str, read: Callable[[], float]) -> None:
        """Hook for a memory pool: `read()` is called at each scrape (from the server's thread)."""
        self.pool_bytes.labels(pool=pool).set_function(read)

    def render(self) -> bytes:
        """The exposition text, as a scrape would get it."""
        return generate_latest(self.registry)

    # -- the HTTP endpoint ------------------------------------------------------------------------
    def start(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
        """Serve /metrics on host:port in a daemon thread; port 0 picks a free port. Returns the port."""
        from prometheus_client import start_http_server

        if self._server is not None:
            raise RuntimeError(f"metrics endpoint already serving on {self.host}:{self.port}")
        if not is_loopback(host):
            log.warning("metrics endpoint bound to %s: reachable from the network, without authentication", host)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; "
                          f"choose another metrics.port in the config") from None
        self.host, self.port = host, self._server.server_port
        log.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    @property
    def url(self) -> str | None:
        if self.port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "PipelineMetrics":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- `holoburn health`: the container health check ----------------------------------------------
def probe(url: str, max_age_s: float, timeout_s: float = 3.0) -> tuple[bool, str]:
    """Healthy when the endpoint answers and its last frame is at most `max_age_s` old."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError) as exc:
        return False, f"no metrics at {url}: {getattr(exc, 'reason', exc)} (is metrics.enabled set in the config?)"
    last = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LAST_FRAME_METRIC:
                last = sample.value
    if not last:
        return False, f"{url} answers but no frame has been counted yet"
    age = time.time() - last
    if age > max_age_s:
        return False, f"last frame {age:.1f} s ago (more than {max_age_s:g} s)"
    return True, f"last frame {age:.1f} s ago"


def add_health_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/metrics",
                   help="metrics endpoint of the running pipeline (default: %(default)s)")
    p.add_argument("--max-age", type=float, default=30.0, metavar="SECONDS",
                   help="unhealthy when no frame was counted for this long (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="HTTP timeout")


def run_health(args) -> int:
    """Exit 0 when healthy, 1 when not (the codes a container HEALTHCHECK expects)."""
    ok, message = probe(args.url, args.max_age, args.timeout)
    print(("healthy: " if ok else "unhealthy: ") + message)
    return 0 if ok else 1
