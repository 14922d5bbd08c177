"""What every benchmark process shares: sizes, the input texts, goals and small statistics."""

from __future__ import annotations

import importlib.util
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Reports of the benchmarks run on their own, copied into BENCHMARKS.md by the main run.
RESULTS = ROOT / "benchmarks" / "results"

API_KEY = "sk-bench"
EMBEDDING_MODEL = "text-embedding-3-small"
CHAT_MODEL = "gpt-4o-mini"
CHAT_MESSAGES = [{"role": "user", "content": "Say hello to the benchmark."}]
SHORT_TEXT = "The quick brown fox jumps over the lazy dog."
# The server streams back one chunk per word of its reply (the first twelve words of this).
STREAM_MESSAGES = [
    {
        "role": "user",
        "content": "Stream back a sentence of twelve words or more so that every token "
        "arrives as a chunk of its own.",
    }
]

# The server's random faults in scenario 3: plain 500s, and 429s that ask for a 0.1 s wait.
FAULT_KINDS = ("500", "429")
FAULT_RETRY_AFTER = 0.1

# Goals of issue 18 (and issue 13's for `map`), shown beside the figures.
GOAL_EMBED_RATIO = 0.5  # ours / raw time per call
GOAL_CHAT_RATIO = 1.02
GOAL_STREAM_RATIO = 1.05  # ours / raw: time to the first chunk, and per chunk after it
GOAL_IDEAL_FRACTION = 0.80  # ideal time / ours, for the pinned batch
GOAL_FAULT_SLOWDOWN = 1.3  # ours with faults / ours without
GOAL_FAULT_PEER_SPEEDUP = 2.0  # a peer's time with faults / ours with faults
GOAL_HEARTBEAT_P99_MS = 10.0
GOAL_CONNECTION_SLACK = 2  # connections opened <= concurrency + this
GOAL_MEMORY_GROWTH = 0.10  # peak RSS at the largest N within 10% of the smallest
GOAL_MAP_RATIO = 2.0  # async map / sync map


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: the issue's for a full run, tiny ones for the smoke run."""

    smoke: bool = False
    repeats: int = 3
    per_call_n: int = 2000
    # Per-call and stream ratios are a few percent apart: more repeats, paired ratios.
    per_call_repeats: int = 5
    batch_texts: int = 20_000
    batch_size: int = 100
    concurrency: int = 16
    dimensions: int = 256
    latency: float = 0.05
    fail_rate: float = 0.2
    seed: int = 1
    memory_sizes: tuple[int, ...] = (50_000, 100_000, 200_000)
    memory_latency: float = 0.0
    heartbeat_interval: float = 0.005
    stream_n: int = 300
    map_items: int = 20_000
    repeated_batches: int = 3
    # Sequential peers take ~13 s a run (their spread is small next to that); under faults they
    # fail early anyway. One run each keeps the full run well under ten minutes.
    slow_peer_repeats: int = 1
    peers: bool = True
    profile: bool = True

    @classmethod
    def full(cls, **overrides: Any) -> Settings:
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "smoke": True,
            "repeats": 1,
            "per_call_repeats": 1,
            "per_call_n": 20,
            "batch_texts": 800,
            "latency": 0.01,
            "memory_sizes": (200, 400, 800),
            "stream_n": 10,
            "map_items": 800,
            # This seed draws 2 faults in the first 8 requests and 3 in the first 40: the fault
            # path runs, and no request can meet the 5 faults in a row that would exhaust the
            # default retry policy (a 1-in-3,125 event per request that would make CI flaky).
            "seed": 49,
            "slow_peer_repeats": 1,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def warmup_texts(self) -> int:
        """Enough to open every connection and import everything lazily imported."""
        return self.batch_size * (2 if self.smoke else self.concurrency)

    @property
    def requests(self) -> int:
        return math.ceil(self.batch_texts / self.batch_size)

    @property
    def ideal_seconds(self) -> float:
        """Every request waits the server latency, ``concurrency`` at a time: nothing is faster."""
        return math.ceil(self.requests / self.concurrency) * self.latency

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["memory_sizes"] = list(self.memory_sizes)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        return cls(**{**data, "memory_sizes": tuple(data["memory_sizes"])})


def text(i: int) -> str:
    """The ``i``-th benchmark input: short, distinct, a dozen tokens."""
    return f"passage {i}: the quick brown fox jumps over the lazy dog near the river bank"


def texts(n: int) -> list[str]:
    return [text(i) for i in range(n)]


def installed(module: str) -> bool:
    """Whether an optional peer can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Run:
    """One timed run of one contender."""

    seconds: float
    ok: int = 0
    lost: int = 0
    cpu_seconds: float = 0.0
    connections: int | None = None
    peak_in_flight: int | None = None
    requests: int | None = None
    retries: int | None = None
    note: str = ""
    heartbeat: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def save_report(name: str, markdown: str) -> None:
    """Keep a separate benchmark's report for the next ``python -m benchmarks`` to include."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
