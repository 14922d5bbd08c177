"""``python -m benchmarks [--smoke]``: run every scenario and write ``BENCHMARKS.md``.

The runner starts the loopback server in a process of its own, then one benchmark process per
contender (``benchmarks._worker``), one after the other so they never compete for the CPU. The
smoke run uses tiny sizes and runs every job in one process: it checks that the harness works,
and its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, Settings
from benchmarks._serve import ServerControl, ServerProcess
from benchmarks.batch import available
from benchmarks.report import Report, machine

SCENARIOS = ("per_call", "stream", "batch", "map", "memory", "profile")
SMOKE_FAULTS = ("ours-async", "ours-sync", "raw-async")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="markdown file to write (default: BENCHMARKS.md for a full run, none for --smoke)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per figure")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run, of {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip LangChain and LlamaIndex")
    parser.add_argument("--note", default=None, help="a line to show under the report's title")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="render the markdown from results saved with --json instead of running",
    )
    return parser.parse_args(argv)


def _run_worker(job: dict[str, Any], timeout: float) -> Any:
    with tempfile.TemporaryDirectory(prefix="resilient-llm-bench-") as tmp:
        job_path, result_path = Path(tmp, "job.json"), Path(tmp, "result.json")
        job_path.write_text(json.dumps(job))
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks._worker", str(job_path), str(result_path)],
            cwd=ROOT,
            timeout=timeout,
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"benchmark job {job['kind']} failed ({completed.returncode}):\n"
                f"{completed.stderr[-4000:]}"
            )
        label = ", ".join(job.get("contenders", []))
        if job["kind"] == "many":
            phases = [line for line in completed.stderr.splitlines() if line.startswith("    ")]
            print("\n".join(phases), file=sys.stderr)
        print(
            f"  {job['kind']} {label}: {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        return json.loads(result_path.read_text())


def _jobs(s: Settings, only: set[str], port: int) -> list[tuple[str, dict[str, Any]]]:
    """The jobs of a run, each a (scenario, job) pair, in the order they run."""
    base = {"settings": s.to_json(), "port": port}
    jobs: list[tuple[str, dict[str, Any]]] = []
    if "memory" in only:  # first: in the smoke run's one process, fork before any thread starts
        jobs.append(("memory", {**base, "kind": "memory"}))
    if "per_call" in only:
        jobs.append(("per_call", {**base, "kind": "per_call"}))
    if "stream" in only:
        jobs.append(("stream", {**base, "kind": "stream"}))
    if "batch" in only:
        for contender in available(s):
            key = contender.key
            # The smoke run checks the fault path on a few contenders only: the raw clients'
            # back-off alone (0.5-1 s a retry) would take most of its time.
            faults = contender.under_faults and (not s.smoke or key in SMOKE_FAULTS)
            job = {"kind": "batch", "contenders": [key], "faults": [False, True][: 1 + faults]}
            jobs.append(("batch", {**base, **job}))
    if "map" in only:
        jobs.append(("map", {**base, "kind": "map"}))
    if "profile" in only:
        jobs.append(("profile", {**base, "kind": "profile"}))
    return jobs


def _execute(s: Settings, jobs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Run the jobs (one process each; one process for all in the smoke run) and merge results."""
    results: dict[str, Any] = {}
    if s.smoke:
        outputs = _run_worker({"kind": "many", "jobs": [job for _, job in jobs]}, timeout=110)
    else:
        # One failing job (a peer's new release, say) must not cost the other nine minutes.
        outputs = []
        for scenario, job in jobs:
            try:
                outputs.append(_run_worker(job, timeout=600))
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                what = ", ".join(job.get("contenders", [])) or scenario
                print(f"  {what} FAILED: {error}", file=sys.stderr, flush=True)
                results.setdefault("errors", []).append(f"{what}: {str(error)[-600:]}")
                outputs.append(None)
    for (scenario, _), output in zip(jobs, outputs, strict=True):
        if output is None:
            continue
        if scenario == "batch":
            results.setdefault(scenario, []).extend(output)
        else:
            results[scenario] = output
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    overrides: dict[str, Any] = {"peers": not args.no_peers}
    if args.repeats is not None:
        overrides["repeats"] = args.repeats
        overrides["slow_peer_repeats"] = min(args.repeats, Settings().slow_peer_repeats)
    s = Settings.tiny(**overrides) if args.smoke else Settings.full(**overrides)
    output = (
        args.output if args.output is not None else (None if args.smoke else ROOT / "BENCHMARKS.md")
    )

    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        s = Settings.from_json(saved.pop("settings"))
        info = saved.pop("info")
        return _finish(s, info, saved, output, args.note)

    info = machine()
    started = time.perf_counter()
    print(
        f"benchmarks ({'smoke' if s.smoke else 'full'}): {info['cores']} cores, "
        f"Python {info['python']}, load {info['load_before']}",
        file=sys.stderr,
        flush=True,
    )
    server = ServerProcess()
    try:
        control = ServerControl(server.port)
        control.prewarm(s.batch_texts, s.dimensions)
        control.close()
        results = _execute(s, _jobs(s, only, server.port))
    finally:
        server.stop()
    info["load_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    info["elapsed"] = time.perf_counter() - started
    print(f"total {info['elapsed']:.0f} s", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps({"settings": s.to_json(), "info": info, **results}))
    return _finish(s, info, results, output, args.note)


def _finish(
    s: Settings,
    info: dict[str, Any],
    results: dict[str, Any],
    output: Path | None,
    note: str | None,
) -> int:
    """Print and write the report; fail if resilient_llm lost anything under faults."""
    markdown = Report(s, info, results, note).render()
    print(markdown)
    if output is not None:
        output.write_text(markdown)

    lost = [
        f"{e['key']}: {r['lost']} lost ({r['note']})"
        for e in results.get("batch", [])
        if e["key"].startswith("ours")
        for r in e["runs"]
        if r["lost"]
    ]
    if lost:
        print("resilient_llm lost items in a batch:\n" + "\n".join(lost), file=sys.stderr)
    if results.get("errors"):
        print("some benchmark jobs failed; see the report", file=sys.stderr)
    return 1 if lost or results.get("errors") else 0


if __name__ == "__main__":
    raise SystemExit(main())
