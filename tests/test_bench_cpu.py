"""`holoburn bench --cpu --peer` runs all three sides on the same frames and writes its numbers
(the figures themselves are the benchmark's, never asserted: timings on shared machines are noise)."""
import json

from test_pipeline import holoburn


def test_bench_cpu_with_its_peer_writes_every_side(tmp_path):
    out = tmp_path / "bench.json"
    result = holoburn("bench", "--cpu", "--peer", "--frames", "6", "--repeats", "1", "--json", out)
    assert result.returncode == 0, result.stderr[-3000:]
    numbers = json.loads(out.read_text())
    assert numbers["frames"] == 6 and len(numbers["plain_fps"]) == len(numbers["pipeline_fps"]) == 1
    peer = numbers["peer"]
    assert len(peer["fps"]) == 1 and peer["fps"][0] > 0 and peer["cpu_ms_per_frame"][0] > 0
    assert "pipeline is" in result.stdout and "peer loop" in result.stdout
