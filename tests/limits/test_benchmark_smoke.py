"""The shared-budget benchmark still runs end to end (tiny sizes); its figures are not asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_prints_a_row_per_limiter(redis_url: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.rate_limits",
            "--rpm",
            "1200",
            "--window",
            "1",
            "--windows",
            "1",
            "--processes",
            "2",
            "--redis",
            redis_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| file", "| redis"))]
    assert [row.split("|")[1:3] for row in rows] == [[" file ", " 2 "], [" redis ", " 2 "]]
