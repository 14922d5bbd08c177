"""Ray Data: rows/s of resilient_llm's actors vs Ray's own OpenAI-compatible HTTP path.

    python -m benchmarks.ray_data [--rows 2000] [--large-rows 20000] [--retries 3] [--save]

Both run on one local Ray (``num_cpus=2``, two actors each) against the loopback server in its
own process (``python -m resilient_llm mock-server --latency 50ms``, with ``--fail-rate 0.2`` for
the fault runs: 429 with ``retry-after: 0``, 500, 503 and connection resets, seeded), embedding
one text per row at 256 dimensions. The output is streamed (``iter_batches``) and timed two
ways: wall-clock from the start to the last block, actor start-up included (Ray starts a fresh
pool for each run, 10-30 s on a loaded 2-core machine), and steady rows/s: the rows after the
first output block over the time from the first block to the last. Each row is then checked: a
vector, an error recorded on the row, or neither (an answer without a vector passed on as if it
were one).

- ours: ``embed_dataset(ds, actors=2, rows_per_batch=250, dimensions=256)``, the library's
  defaults otherwise (8 requests in flight per actor, retries with back-off); and the same with
  ``batch_size=1``, one request per row as Ray's path sends.
- Ray's: ``ray.data.llm.HttpRequestProcessorConfig(url=.../embeddings, concurrency=2,
  batch_size=64, max_retries=R)``, one request per row (its defaults otherwise; ``max_retries``
  defaults to 0, which fails the job at the first transient error).

Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from benchmarks._common import save_report

API_KEY = "sk-bench"
MODEL = "text-embedding-3-small"
DIMS = 256
LATENCY = "50ms"
SEED = "1"


@dataclass
class Row:
    method: str
    faults: str
    rows: int
    vectors: int = 0
    errors: int = 0
    silent: int = 0
    seconds: float = 0.0
    steady: float = 0.0
    outcome: str = "done"

    def cells(self) -> list[str]:
        done = self.outcome == "done"
        return [
            self.method,
            self.faults,
            f"{self.rows:,}",
            f"{self.seconds:.1f}",
            f"{self.rows / self.seconds:,.0f}" if done else "-",
            f"{self.steady:,.0f}" if done and self.steady else "-",
            f"{self.vectors:,}",
            f"{self.errors:,}",
            f"{self.silent:,}",
            self.outcome,
        ]


@contextmanager
def mock_server(fail_rate: float) -> Iterator[str]:
    """The loopback server in a process of its own; yields its base URL."""
    command = [
        sys.executable,
        "-m",
        "resilient_llm",
        "mock-server",
        "--port",
        "0",
        "--latency",
        LATENCY,
        "--seed",
        SEED,
    ]
    if fail_rate:
        command += ["--fail-rate", str(fail_rate)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise RuntimeError(f"the mock server did not start: {base_url!r}")
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=10)


def dataset(n: int) -> Any:
    import pandas as pd
    import ray

    frame = pd.DataFrame({"id": range(n), "text": [f"benchmark row {i}" for i in range(n)]})
    blocks = 8
    step = -(-n // blocks)
    return ray.data.from_pandas([frame.iloc[i : i + step] for i in range(0, n, step)])


def run_ours(base_url: str, n: int, faults: str, **options: Any) -> Row:
    from resilient_llm.integrations.ray import embed_dataset

    label = "resilient_llm `embed_dataset` (ours)"
    if options:
        label += " " + ", ".join(f"{k}={v}" for k, v in options.items())
    row = Row(label, faults, n)
    job = embed_dataset(
        dataset(n),
        actors=2,
        rows_per_batch=250,
        api_key=API_KEY,
        base_url=base_url,
        dimensions=DIMS,
        **options,
    )
    df = _consume(job, row)
    if df is not None:
        has_vector = df["embedding"].map(_is_vector)
        row.vectors = int(has_vector.sum())
        row.errors = int(df["error_type"].notna().sum())
        row.silent = int((~has_vector & df["error_type"].isna()).sum())
    return row


def run_rays(base_url: str, n: int, faults: str, retries: int) -> Row:
    row = Row(f"Ray `HttpRequestProcessorConfig` (max_retries={retries})", faults, n)
    try:
        from ray.data.llm import HttpRequestProcessorConfig, build_processor
    except ImportError as exc:
        row.outcome = f"not available ({exc})"
        return row
    config = HttpRequestProcessorConfig(
        url=f"{base_url}/embeddings",
        headers={"Authorization": f"Bearer {API_KEY}"},
        concurrency=2,
        batch_size=64,
        max_retries=retries,
    )
    processor = build_processor(config, preprocess=_payload, postprocess=_vector)
    df = _consume(processor(dataset(n)), row)
    if df is not None:
        has_vector = df["embedding"].map(_is_vector)
        row.vectors = int(has_vector.sum())
        row.silent = int((~has_vector).sum())  # Ray records no error on a row
    return row


def _consume(job: Any, row: Row) -> Any:
    """Stream the job's output, timing it: wall-clock, and first to last output block."""
    import pandas as pd

    frames = []
    started = time.perf_counter()
    first = last = started
    first_rows = 0
    try:
        for frame in job.iter_batches(batch_format="pandas", batch_size=None):
            last = time.perf_counter()
            if not frames:
                first, first_rows = last, len(frame)
            frames.append(frame)
    except Exception as exc:
        row.seconds = time.perf_counter() - started
        row.outcome = f"job failed: {type(exc).__name__}"
        return None
    row.seconds = last - started
    if last > first:
        row.steady = (sum(map(len, frames)) - first_rows) / (last - first)
    return pd.concat(frames, ignore_index=True)


def _is_vector(value: object) -> bool:
    return hasattr(value, "__len__") and len(value) == DIMS and not isinstance(value, str)


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "payload": {"model": MODEL, "input": row["text"], "dimensions": DIMS},
    }


def _vector(row: dict[str, Any]) -> dict[str, Any]:
    answer = row["http_response"]
    data = answer.get("data") if isinstance(answer, dict) else None
    vector = list(data[0]["embedding"]) if data else None
    return {"id": row["id"], "embedding": vector}


def table(rows: list[Row]) -> str:
    head = [
        "method",
        "faults",
        "rows",
        "wall s",
        "rows/s (wall)",
        "rows/s (steady)",
        "with vector",
        "error on row",
        "neither (silent)",
        "job",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows per run (both methods)")
    parser.add_argument(
        "--large-rows", type=int, default=20_000, help="an extra run of ours (0: none)"
    )
    parser.add_argument("--retries", type=int, default=3, help="max_retries of Ray's path")
    parser.add_argument(
        "--save",
        action="store_true",
        help="keep the report in benchmarks/results/ for BENCHMARKS.md (python -m benchmarks)",
    )
    args = parser.parse_args(argv)

    import pandas
    import ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    runs: list[tuple[float, Callable[[str], Row]]] = []
    for fail_rate, label in ((0.0, "none"), (0.2, "20%")):
        runs.append((fail_rate, lambda url, label=label: run_ours(url, args.rows, label)))
        runs.append(
            (fail_rate, lambda url, label=label: run_ours(url, args.rows, label, batch_size=1))
        )
        runs.append(
            (fail_rate, lambda url, label=label: run_rays(url, args.rows, label, args.retries))
        )
        if args.large_rows:
            runs.append((fail_rate, lambda url, label=label: run_ours(url, args.large_rows, label)))
    results = []
    try:
        for fail_rate, run in runs:
            with mock_server(fail_rate) as base_url:
                result = run(base_url)
            print(" ".join(result.cells()), file=sys.stderr, flush=True)
            results.append(result)
    finally:
        ray.shutdown()

    report = "\n".join(
        [
            "## Ray Data: resilient_llm actors vs Ray's own `HttpRequestProcessorConfig`",
            "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: Ray {ray.__version__}, "
            f"pandas {pandas.__version__}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs; local Ray num_cpus=2, 2 actors per method; server latency "
            f"{LATENCY}, {DIMS} dims, one text per row.",
            "",
            table(results),
        ]
    )
    print(report)
    if args.save:
        save_report("ray_data", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
