"""Priority lanes without a GPU: what each lane may hold, in which order lanes are served, which
frame goes when a lane is full, and how lanes map onto CUDA stream priorities.

Plain Python, no Holoscan, no CUDA: the lane operators (operators/triage.py, operators/lane_stages.py, processing/runtime.py) use it on the GPU and on
the CPU alike, so the CPU path with the same lanes orders its work by priority too.

- `LanePolicy`: one lane's settings (batch size, queue capacity, drop rule, in-flight depth,
  stream priority level, memory), read from the `lanes` section of configs/holoburn.yaml by app/graph.py.
- `LaneQueue`: one lane's bounded queue. Full: the OLDEST queued frame is dropped (a live picture
  is worth more than a stale one), or the newest is refused (`drop: newest`); every drop is
  counted with its reason.
- `LaneBoard`: the queues of one or more lanes feeding one chain of operators; `next_batch()` takes
  from the most urgent non-empty lane (Lane order: EMERGENCY first) while fewer than `depth`
  batches are in flight. On the GPU each lane has its own board and chain (lanes run side by
  side on their own streams); on the CPU all lanes share one board, so priority orders the work.
- `stream_priority()`: a lane's level (`highest`, `high`, `low`, `lowest` or an integer) turned
  into a CUDA stream priority inside the device's range (read from the device, never assumed).
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from holoburn.clinical.errors import BadConfig
from holoburn.clinical.triage import Lane

DROP_RULES = ("oldest", "newest")
PRIORITY_LEVELS = ("highest", "high", "low", "lowest")
MEMORY_KINDS = ("dedicated", "shared")

#: drop reasons, as they appear in results and summaries
DROPPED_OLDEST = "queue_full_dropped_oldest"
REFUSED_NEWEST = "queue_full_refused_newest"
UNSERVED_AT_STOP = "queued_at_stop"


class LaneConfigError(BadConfig):
    """A lane setting is missing or out of range; the message names the lane, the key and the value."""


@dataclass(frozen=True)
class LanePolicy:
    """One lane's settings.

    batch_size: frames per inference batch (EMERGENCY: always 1, it never waits for company).
    queue_capacity: frames that may wait; beyond it `drop` decides which frame goes.
    depth: batches in flight between the lane's gate and its end (pipelining, bounded memory).
    stream_priority: `highest` | `high` | `low` | `lowest` or an int inside the device's range.
    memory: `dedicated` (own preallocated pool of `pool_mb`, every buffer made at start-up) or
    `shared` (a pool per lane, capped at `pool_mb`, whose blocks are reused after warm-up).
    """

    lane: Lane
    batch_size: int = 1
    queue_capacity: int = 4
    drop: str = "oldest"
    depth: int = 2
    stream_priority: Any = "lowest"
    memory: str = "shared"
    pool_mb: int = 512

    def __post_init__(self):
        where = f"lane {self.lane.name}"
        if self.batch_size < 1:
            raise LaneConfigError(f"{where}: batch_size must be >= 1, got {self.batch_size}")
        if self.lane is Lane.EMERGENCY and self.batch_size != 1:
            raise LaneConfigError(f"{where}: batch_size must be 1 (the emergency lane never batches), got {self.batch_size}")
        if self.queue_capacity < self.batch_size:
            raise LaneConfigError(
                f"{where}: queue_capacity {self.queue_capacity} is smaller than batch_size {self.batch_size}"
            )
        if self.drop not in DROP_RULES:
            raise LaneConfigError(f"{where}: drop must be one of {', '.join(DROP_RULES)}, got {self.drop!r}")
        if self.depth < 1:
            raise LaneConfigError(f"{where}: depth must be >= 1, got {self.depth}")
        if self.memory not in MEMORY_KINDS:
            raise LaneConfigError(f"{where}: memory must be one of {', '.join(MEMORY_KINDS)}, got {self.memory!r}")
        if self.pool_mb <= 0:
            raise LaneConfigError(f"{where}: pool_mb must be positive, got {self.pool_mb}")
        level = self.stream_priority
        if not (isinstance(level, int) and not isinstance(level, bool)) and level not in PRIORITY_LEVELS:
            raise LaneConfigError(
                f"{where}: stream_priority must be an integer or one of {', '.join(PRIORITY_LEVELS)}, got {level!r}"
            )


def stream_priority(level, least: int, greatest: int) -> int:
    """CUDA stream priority for a lane level inside the device's range.

    least, greatest: what cudaDeviceGetStreamPriorityRange reports (e.g. 0 and -5 on an H100;
    lower numbers are more urgent). `high` and `low` sit a third of the way from either end.
    An integer is clamped into the range.
    """
    lo, hi = min(least, greatest), max(least, greatest)  # numeric bounds, whatever the sign convention
    if isinstance(level, int) and not isinstance(level, bool):
        return max(lo, min(hi, level))
    span = greatest - least
    offsets = {"lowest": 0.0, "low": 1 / 3, "high": 2 / 3, "highest": 1.0}
    if level not in offsets:
        raise LaneConfigError(f"stream priority level must be one of {', '.join(PRIORITY_LEVELS)}, got {level!r}")
    return int(round(least + offsets[level] * span))


class LaneQueue:
    """One lane's bounded FIFO. Not thread-safe on its own: LaneBoard holds the lock."""

    def __init__(self, policy: LanePolicy):
        self.policy = policy
        self._items: deque = deque()
        self.pushed = 0
        self.drops: Counter = Counter()  # reason -> frames

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item) -> list[tuple]:
        """Queue `item`; return [(dropped item, reason)] for what made room (the oldest queued
        frame, or `item` itself under `drop: newest`); [] when there was room."""
        self.pushed += 1
        if len(self._items) < self.policy.queue_capacity:
            self._items.append(item)
            return []
        if self.policy.drop == "newest":
            self.drops[REFUSED_NEWEST] += 1
            return [(item, REFUSED_NEWEST)]
        oldest = self._items.popleft()
        self._items.append(item)
        self.drops[DROPPED_OLDEST] += 1
        return [(oldest, DROPPED_OLDEST)]

    def pop_batch(self) -> list:
        """Up to batch_size items, oldest first."""
        n = min(self.policy.batch_size, len(self._items))
        return [self._items.popleft() for _ in range(n)]

    def drain(self) -> list:
        items = list(self._items)
        self._items.clear()
        return items


@dataclass
class LaneBoard:
    """Queues of one or more lanes feeding one chain; served most urgent lane first.

    depth: batches the chain may hold at once (None: the smallest depth of its lanes).
    Thread-safe: the gate operator pushes and takes, the end of the chain calls `done()`.
    """

    policies: Iterable[LanePolicy]
    depth: int | None = None
    queues: dict = field(init=False)
    in_flight: int = field(init=False, default=0)
    served: Counter = field(init=False, default_factory=Counter)  # lane name -> batches taken
    order: list = field(init=False, default_factory=list)  # (lane name, batch size) as served, capped
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)
    max_order: int = 10000

    def __post_init__(self):
        policies = sorted(self.policies, key=lambda p: p.lane)
        if not policies:
            raise LaneConfigError("a lane board needs at least one lane")
        names = [p.lane for p in policies]
        if len(set(names)) != len(names):
            raise LaneConfigError(f"lane listed twice on one board: {[n.name for n in names]}")
        self.queues = {p.lane: LaneQueue(p) for p in policies}
        if self.depth is None:
            self.depth = min(p.depth for p in policies)

    @property
    def lanes(self) -> list[Lane]:
        return list(self.queues)

    def push(self, lane: Lane, item) -> list[tuple]:
        """Queue one frame on its lane; returns [(dropped frame, reason)] for what made room."""
        if lane not in self.queues:
            raise KeyError(f"lane {lane.name} is not on this board (lanes: {[l.name for l in self.queues]})")
        with self._lock:
            return self.queues[lane].push(item)

    def next_batch(self):
        """(lane, items) from the most urgent non-empty lane, or None when nothing is queued or
        `depth` batches are already in flight. Counts the batch as in flight."""
        with self._lock:
            if self.in_flight >= self.depth:
                return None
            for lane, queue in self.queues.items():  # sorted: most urgent first
                if len(queue):
                    items = queue.pop_batch()
                    self.in_flight += 1
                    self.served[lane.name] += 1
                    if len(self.order) < self.max_order:
                        self.order.append((lane.name, len(items)))
                    return lane, items
            return None

    def done(self) -> None:
        """One batch left the chain (processed or failed): room for the next."""
        with self._lock:
            if self.in_flight <= 0:
                raise RuntimeError("lane board: done() without a batch in flight")
            self.in_flight -= 1

    def queued(self) -> dict[str, int]:
        with self._lock:
            return {lane.name: len(q) for lane, q in self.queues.items()}

    def drain(self) -> list:
        """Everything still queued (at stop), most urgent lane first."""
        with self._lock:
            return [item for q in self.queues.values() for item in q.drain()]

    def drops(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {lane.name: dict(q.drops) for lane, q in self.queues.items() if q.drops}

    def stats(self) -> dict:
        with self._lock:
            return {
                lane.name: {"pushed": q.pushed, "queued": len(q), "batches": self.served[lane.name],
                            "dropped": dict(q.drops)}
                for lane, q in self.queues.items()
            }


def lane_buffer_bytes(frame_height: int, frame_width: int, input_size: int, num_classes: int, batch: int = 1,
                      logits_bytes: int = 4) -> dict[str, int]:
    """Device bytes one lane's preallocated buffers take (per buffer set), by buffer.

    staging: uploaded frames (B, H, W, 3) uint8; model_input (B, 3, S, S) float32;
    logits (B, C, S, S); square_mask (B, S, S) uint8; mask (B, H, W) uint8; overlay (B, H, W, 3)
    uint8; class_counts (B, C) int32. Engine scratch (activations) is the backend's and is
    measured, not computed.
    """
    hw = frame_height * frame_width
    s2 = input_size * input_size
    return {
        "staging": batch * hw * 3,
        "model_input": batch * 3 * s2 * 4,
        "logits": batch * num_classes * s2 * logits_bytes,
        "square_mask": batch * s2,
        "mask": batch * hw,
        "overlay": batch * hw * 3,
        "class_counts": batch * num_classes * 4,
    }


@dataclass(frozen=True)
class Feedback:
    """What a lane's sink sends back to triage after each batch: a credit (one batch of that
    chain done, so the next may go) and each processed frame's triage level (escalation).

    outcomes: (source id, frame index, triage dict) per processed frame.
    """

    credit: bool
    outcomes: tuple = ()
