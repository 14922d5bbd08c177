"""One benchmark process: ``python -m benchmarks._worker JOB.json RESULT.json``.

The runner starts one of these per contender, so that what one library imports or leaves behind
cannot slow another down; the smoke run puts every job in one process (``many``) to stay quick.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from benchmarks._common import Settings
from benchmarks._serve import ServerControl


def run_job(job: dict[str, Any]) -> Any:
    if job["kind"] == "many":
        results = []
        for part in job["jobs"]:
            started = time.perf_counter()
            results.append(run_job(part))
            print(f"    {part['kind']}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return results
    s = Settings.from_json(job["settings"])
    control = ServerControl(job["port"])
    try:
        kind = job["kind"]
        if kind == "per_call":
            from benchmarks import per_call

            return per_call.run(control.configure(), s)
        if kind == "batch":
            from benchmarks import batch
            from benchmarks.contenders import CONTENDERS

            return [
                batch.measure(control, s, CONTENDERS[key], faults=faults)
                for key in job["contenders"]
                for faults in job["faults"]
            ]
        if kind == "stream":
            from benchmarks import streaming

            return streaming.run(control.configure(), s)
        if kind == "map":
            from benchmarks import mapping

            return mapping.run(control.configure(), s)
        if kind == "memory":
            from benchmarks import memory

            return memory.run_sizes(control.configure(latency=s.memory_latency), s)
        if kind == "profile":
            from benchmarks import profiling

            return profiling.run(lambda latency: control.configure(latency=latency), s)
        raise ValueError(f"unknown job kind {kind!r}")
    finally:
        control.close()


def main() -> None:
    job_path, result_path = sys.argv[1], sys.argv[2]
    with open(job_path) as f:
        job = json.load(f)
    result = run_job(job)
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
