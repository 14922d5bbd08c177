"""Turn the measurements into the markdown of ``BENCHMARKS.md``: figures beside their goals."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import math
import os
import platform
import sys
from typing import Any

from benchmarks._common import (
    GOAL_BATCH_SPEEDUP,
    GOAL_CHAT_RATIO,
    GOAL_CONNECTION_SLACK,
    GOAL_EMBED_RATIO,
    GOAL_FAULT_SLOWDOWN,
    GOAL_HEARTBEAT_P99_MS,
    GOAL_MEMORY_GROWTH,
    Settings,
    median,
)

PACKAGES = (
    "resilient-llm",
    "openai",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "anyio",
    "tenacity",
    "numpy",
    "langchain-openai",
    "langchain-core",
    "llama-index-core",
    "llama-index-embeddings-openai",
)

OURS = ("ours-async", "ours-sync")
RAW_OF = {True: "raw-async", False: "raw-threads"}  # the raw baseline of async / sync rows
REFERENCE = "raw-async-body"  # hand-written raw decoding: a reference, not a peer


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu": cpu,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
        "load_before": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# -- formatting ---------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.2f}x"


def _mark(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# -- derived figures ----------------------------------------------------------------------------


def _runs(entry: dict[str, Any]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = entry["runs"]
    return runs


def _wall(entry: dict[str, Any] | None) -> float:
    return math.nan if entry is None else median([r["seconds"] for r in _runs(entry)])


def _batch_index(batch: list[dict[str, Any]], faults: bool) -> dict[str, dict[str, Any]]:
    return {e["key"]: e for e in batch if e["faults"] == faults}


class Report:
    """Everything measured in one run, and the goals checked against it."""

    def __init__(
        self,
        s: Settings,
        info: dict[str, Any],
        results: dict[str, Any],
        note: str | None = None,
    ) -> None:
        self.s = s
        self.note = note
        self.info = info
        self.results = results
        self.goals: list[tuple[str, str, str, bool | None]] = []  # scenario, goal, figure, met
        self.misses: list[str] = []

    def goal(self, scenario: str, goal: str, figure: str, met: bool | None, why: str = "") -> None:
        self.goals.append((scenario, goal, figure, met))
        if met is False and why:
            self.misses.append(f"- **{scenario}: {goal}** — {figure}. {why}")

    # -- sections ---------------------------------------------------------------------------

    def machine_lines(self) -> list[str]:
        info = self.info
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        load = info.get("load_before")
        load_text = "" if not load else f"; load average at start {load[0]:.2f}"
        after = info.get("load_after")
        if after:
            load_text += f", at end {after[0]:.2f}"
        return [
            f"- Machine: {info['cores']} cores ({info['usable_cores']} usable), {info['cpu']}"
            f"{load_text}",
            f"- Python {info['python']} ({info['implementation']}), {info['platform']}",
            f"- Packages: {versions}",
            f"- Run: {info['date']}, {'smoke' if self.s.smoke else 'full'} mode, "
            f"median of {self.s.repeats} run(s) per figure; the server runs in a process of its "
            "own on loopback.",
        ]

    def per_call_lines(self) -> list[str]:
        rows = self.results.get("per_call")
        if rows is None:
            return []
        s = self.s
        lines = [
            f"## 1. Per-call overhead: {s.per_call_n:,} sequential calls, zero-latency server",
            "",
            "Microseconds per call (median of the repeats); `x raw` is the time over the raw "
            "client's, so lower is better. Peers (LangChain, LlamaIndex) make a quarter of the "
            "calls: they only set the scale.",
            "",
        ]
        by = {(r["endpoint"], r["key"], r["is_async"]): r for r in rows}
        table: list[list[str]] = []
        for endpoint in ("embed", "chat"):
            keys = []
            for r in rows:
                if r["endpoint"] == endpoint and r["key"] not in keys:
                    keys.append(r["key"])
            for key in keys:
                cells = [f"`{endpoint}`", ""]
                for is_async in (False, True):
                    row = by.get((endpoint, key, is_async))
                    raw = by.get((endpoint, "raw", is_async))
                    if row is None:
                        cells += ["—", "—"]
                        continue
                    cells[1] = cells[1] or row["label"]
                    us = median(row["samples"]) * 1e6
                    ratio = us / (median(raw["samples"]) * 1e6) if raw else math.nan
                    cells += [_f(us, 0), _x(ratio)]
                table.append(cells)
        lines += _table(["call", "contender", "sync µs", "x raw", "async µs", "x raw"], table)
        for endpoint, limit, word in (
            ("embed", GOAL_EMBED_RATIO, f"≤ {GOAL_EMBED_RATIO}x raw"),
            ("chat", GOAL_CHAT_RATIO, "within 5% of raw"),
        ):
            for is_async in (False, True):
                ours = by.get((endpoint, "ours", is_async))
                raw = by.get((endpoint, "raw", is_async))
                if not ours or not raw:
                    continue
                ratio = median(ours["samples"]) / median(raw["samples"])
                kind = "async" if is_async else "sync"
                bare = by.get((endpoint, "bare", False))
                floor = (
                    f" The bare `http.client` floor is {median(bare['samples']) * 1e6:,.0f} µs."
                    if bare
                    else ""
                )
                bypass = by.get((endpoint, "http-only", is_async))
                if bypass:
                    floor += (
                        " openai's HTTP client without the SDK takes "
                        f"{median(bypass['samples']) / median(raw['samples']):.2f}x raw: most of "
                        "the call is the SDK's request machinery (`post` -> `_build_request`, "
                        "options models, header merging) that ours and raw share."
                    )
                self.goal(
                    "1",
                    f"`{endpoint}` ({kind}) {word}",
                    f"{ratio:.2f}x raw ({median(ours['samples']) * 1e6:,.0f} vs "
                    f"{median(raw['samples']) * 1e6:,.0f} µs)",
                    ratio <= limit,
                    f"Over the goal by {(ratio / limit - 1) * 100:.1f}%.{floor} Profile below.",
                )
        return [*lines, ""]

    def batch_lines(self) -> list[str]:
        batch = self.results.get("batch")
        if batch is None:
            return []
        s = self.s
        clean = _batch_index(batch, False)
        faulty = _batch_index(batch, True)
        ideal = s.ideal_seconds
        lines = [
            f"## 2. Batch throughput, 5. event loop, 6. connections: {s.batch_texts:,} texts, "
            f"{s.dimensions} dims, batch {s.batch_size}, {s.concurrency} in flight, "
            f"{s.latency * 1e3:.0f} ms server latency",
            "",
            "Wall seconds are medians; `speed x raw` is the raw client's time over this one "
            "(async rows against raw async + gather, sync rows against raw + threads); `of ideal` "
            "is the "
            f"ideal {ideal:.2f} s (ceil({s.requests} / {s.concurrency}) x "
            f"{s.latency * 1e3:.0f} ms) over the wall time. Client CPU is the process's CPU "
            "seconds during the batch (all threads): near the wall time means the client is "
            "CPU-bound. Heartbeat: how late a task sleeping "
            f"{s.heartbeat_interval * 1e3:.0f} ms wakes up during the batch (async rows). "
            f"Sequential peers (one request at a time) run {s.slow_peer_repeats} time(s), the "
            f"others {s.repeats}.",
            "",
        ]
        rows = []
        for key, entry in clean.items():
            raw = clean.get(RAW_OF[entry["is_async"]])
            wall = _wall(entry)
            runs = _runs(entry)
            conns = [r["connections"] for r in runs]
            peaks = [r["peak_in_flight"] for r in runs]
            beats = [r["heartbeat"] for r in runs if r.get("heartbeat")]
            lost = max(r["lost"] for r in runs)
            rows.append(
                [
                    entry["label"] + (" (ours)" if key in OURS else ""),
                    _f(wall),
                    _x(_wall(raw) / wall) if raw else "—",
                    _f(s.batch_texts / wall, 0),
                    f"{ideal / wall * 100:.0f}%",
                    _f(median([r["cpu_seconds"] for r in runs])),
                    f"{min(conns)}-{max(conns)}" if min(conns) != max(conns) else str(conns[0]),
                    str(max(peaks)),
                    _f(median([b["p99_ms"] for b in beats]), 1) if beats else "—",
                    _f(max(b["max_ms"] for b in beats), 1) if beats else "—",
                    str(lost) if lost else "0",
                ]
            )
        lines += _table(
            [
                "contender",
                "wall s",
                "speed x raw",
                "texts/s",
                "of ideal",
                "client CPU s",
                "connections",
                "peak in flight",
                "heartbeat p99 ms",
                "heartbeat max ms",
                "lost",
            ],
            rows,
        )
        lines.append("")
        lines += self._bounds(clean)
        self._batch_goals(clean)
        if faulty:
            lines += self._fault_lines(clean, faulty)
        return lines

    def _bounds(self, clean: dict[str, dict[str, Any]]) -> list[str]:
        """Achieved against ideal for our rows, and what the profile says bounds the rest."""
        s = self.s
        profiles = self.results.get("profile") or {}
        lines = []
        for key in OURS:
            entry = clean.get(key)
            if entry is None:
                continue
            kind = "async" if entry["is_async"] else "sync"
            wall = _wall(entry)
            cpu = median([r["cpu_seconds"] for r in _runs(entry)])
            peak = max(r["peak_in_flight"] for r in _runs(entry))
            text = (
                f"- **Ours ({kind})** reaches {s.ideal_seconds / wall * 100:.0f}% of the ideal "
                f"({wall:.2f} s against {s.ideal_seconds:.2f} s), with {cpu:.2f} CPU s in "
                f"{wall:.2f} s ({cpu / wall * 100:.0f}% of the wall time) and at most {peak} of "
                f"{s.concurrency} requests in flight"
            )
            profile = profiles.get(f"batch, {kind}")
            if profile:
                top = ", ".join(
                    f"`{w}` {share * 100:.0f}%" for w, share in profile["ours_files"][:3]
                )
                groups = ", ".join(
                    f"{g} {share * 100:.0f}%"
                    for g, share in profile["groups"][:5]
                    if g != "resilient_llm"
                )
                text += (
                    f". Profiled, {dict(profile['groups']).get('resilient_llm', 0) * 100:.0f}% "
                    f"of its CPU is in resilient_llm (by file: {top}); the rest: {groups}"
                )
            lines.append(text + ".")
        return [*lines, ""] if lines else []

    def _batch_goals(self, clean: dict[str, dict[str, Any]]) -> None:
        s = self.s
        peers = {k: _wall(e) for k, e in clean.items() if k not in OURS and k != REFERENCE}
        for key in OURS:
            entry = clean.get(key)
            if entry is None:
                continue
            kind = "async" if entry["is_async"] else "sync"
            raw = clean.get(RAW_OF[entry["is_async"]])
            wall = _wall(entry)
            cpu = median([r["cpu_seconds"] for r in _runs(entry)])
            peak = max(r["peak_in_flight"] for r in _runs(entry))
            bound = (
                f"The client used {cpu:.2f} CPU s in {wall:.2f} s of wall time "
                f"({cpu / wall * 100:.0f}%), against an ideal of {s.ideal_seconds:.2f} s: "
                + (
                    "it is CPU-bound (one GIL), see the profile below."
                    if cpu / wall > 0.7
                    else "it waits on the server/loopback more than it computes."
                )
                + (
                    f" It never had more than {peak} requests in flight (of {s.concurrency}): "
                    "requests are planned and sent slower than they complete."
                    if peak < s.concurrency
                    else ""
                )
            )
            if raw:
                speed = _wall(raw) / wall
                self.goal(
                    "2",
                    f"ours ({kind}) ≥ {GOAL_BATCH_SPEEDUP}x raw throughput",
                    f"{speed:.2f}x ({wall:.2f} s vs {_wall(raw):.2f} s; "
                    f"{s.ideal_seconds / wall * 100:.0f}% of ideal)",
                    speed >= GOAL_BATCH_SPEEDUP,
                    f"Short by {(1 - speed / GOAL_BATCH_SPEEDUP) * 100:.0f}%. {bound}",
                )
            if peers:
                fastest = min(peers, key=lambda k: peers[k])
                ahead = wall < peers[fastest]
                self.goal(
                    "2",
                    f"ours ({kind}) ahead of every peer",
                    f"{wall:.2f} s; fastest other: {clean[fastest]['label']} "
                    f"{peers[fastest]:.2f} s",
                    ahead,
                    f"Behind by {(wall / peers[fastest] - 1) * 100:.0f}%. {bound}",
                )
            conns = max(r["connections"] for r in _runs(entry))
            limit = s.concurrency + GOAL_CONNECTION_SLACK
            self.goal(
                "6",
                f"ours ({kind}) opens ≤ {limit} connections",
                f"{conns} (peak {max(r['peak_in_flight'] for r in _runs(entry))} in flight)",
                conns <= limit,
                f"{conns - limit} more than the goal.",
            )
            beats = [r["heartbeat"] for r in _runs(entry) if r.get("heartbeat")]
            if beats:
                p99 = median([b["p99_ms"] for b in beats])
                worst = max(b["max_ms"] for b in beats)
                self.goal(
                    "5",
                    f"heartbeat p99 < {GOAL_HEARTBEAT_P99_MS:.0f} ms during the async batch",
                    f"p99 {p99:.1f} ms, worst {worst:.1f} ms",
                    p99 < GOAL_HEARTBEAT_P99_MS,
                    f"Over by {p99 - GOAL_HEARTBEAT_P99_MS:.1f} ms. The loop shares one GIL "
                    "with the thread that plans the batch (reads inputs, counts tokens); a "
                    "CPU-bound thread holds it for the 5 ms switch interval at a time, and the "
                    "loop's own work per response (decoding, accounting) adds to it.",
                )

    def _fault_lines(
        self, clean: dict[str, dict[str, Any]], faulty: dict[str, dict[str, Any]]
    ) -> list[str]:
        s = self.s
        lines = [
            f"## 3. The same batch with {s.fail_rate:.0%} random faults (500s and 429s with "
            f"`retry-after: 0`, seeded {s.seed}…)",
            "",
            "Items lost are what the caller gets back: when `asyncio.gather` or `pool.map` raises, "
            "the batches that did succeed are lost with it (the time is then the time to the "
            "exception). Requests are what the server received (retries included); retries are "
            "our own count.",
            "",
        ]
        rows = []
        for key, entry in faulty.items():
            runs = _runs(entry)
            wall = _wall(entry)
            base = _wall(clean.get(key))
            lost = [r["lost"] for r in runs]
            notes = sorted({r["note"] for r in runs if r["note"]})
            raised = all(r["lost"] for r in runs)
            retries = [r["retries"] for r in runs if r["retries"] is not None]
            rows.append(
                [
                    entry["label"] + (" (ours)" if key in OURS else ""),
                    _f(wall),
                    _x(wall / base) if not (math.isnan(base) or raised) else "—",
                    f"{median([float(x) for x in lost]):,.0f}"
                    + (
                        f" (runs: {', '.join(f'{x:,}' for x in lost)})"
                        if len(set(lost)) > 1
                        else ""
                    ),
                    _f(median([float(r["extra"]["server_requests"]) for r in runs]), 0),
                    _f(median([float(x) for x in retries]), 0) if retries else "—",
                    str(max(r["peak_in_flight"] for r in runs)),
                    "; ".join(notes) if notes else "",
                ]
            )
        lines += _table(
            [
                "contender",
                "wall s",
                "x own fault-free",
                "items lost",
                "requests",
                "retries",
                "peak in flight",
                "note",
            ],
            rows,
        )
        lines.append("")
        self._fault_goals(clean, faulty)
        return lines

    def _fault_goals(
        self, clean: dict[str, dict[str, Any]], faulty: dict[str, dict[str, Any]]
    ) -> None:
        s = self.s
        for key in OURS:
            entry = faulty.get(key)
            if entry is None:
                continue
            kind = "async" if entry["is_async"] else "sync"
            lost = max(r["lost"] for r in _runs(entry))
            notes = "; ".join(sorted({r["note"] for r in _runs(entry) if r["note"]}))
            self.goal(
                "3",
                f"ours ({kind}) loses nothing",
                f"{lost} lost" + (f" ({notes})" if notes else ""),
                lost == 0,
                f"A request met a fault on every one of its attempts (default "
                f"`RetryPolicy(max_attempts=5)`): at a {s.fail_rate:.0%} fault rate that is "
                f"{s.fail_rate**5:.2%} of requests, so a run of {s.requests} requests loses a "
                f"batch about once in {1 / (1 - (1 - s.fail_rate**5) ** s.requests):.0f} runs. "
                "429s with `retry-after: 0` are retried at once, so they use attempts up fast.",
            )
            wall, base = _wall(entry), _wall(clean.get(key))
            if not math.isnan(base):
                ratio = wall / base
                retries = median([float(r["retries"] or 0) for r in _runs(entry)])
                peak = max(r["peak_in_flight"] for r in _runs(entry))
                self.goal(
                    "3",
                    f"ours ({kind}) ≤ {GOAL_FAULT_SLOWDOWN}x its fault-free time",
                    f"{ratio:.2f}x ({wall:.2f} s vs {base:.2f} s)",
                    ratio <= GOAL_FAULT_SLOWDOWN,
                    f"Over by {(ratio / GOAL_FAULT_SLOWDOWN - 1) * 100:.0f}%. About "
                    f"{retries:.0f} retries each wait a full-jitter back-off (base 0.5 s, "
                    "doubling), so a request that fails twice waits ~0.75 s on average and "
                    "sits on the critical path; and every 429 halves the concurrency target "
                    f"(AIMD, 1 s cooldown: peak {peak} in flight, not {s.concurrency}). The "
                    "tail of back-offs and the lowered concurrency bound it, not CPU.",
                )

    def memory_lines(self) -> list[str]:
        rows = self.results.get("memory")
        if not rows:
            return []
        lines = [
            "## 4. Memory: sync `iter_embed_batch` over a generator, vectors dropped as they "
            "arrive",
            "",
            "One process per size; peak RSS is the kernel's high-water mark (VmHWM), baseline "
            "is the RSS after a warm-up batch.",
            "",
        ]
        table = [
            [
                f"{r['n']:,}",
                _f(r["seconds"]),
                _f(r["baseline_rss_kib"] / 1024, 1),
                _f(r["peak_rss_kib"] / 1024, 1),
                _f((r["peak_rss_kib"] - r["baseline_rss_kib"]) / 1024, 1),
                f"{r['failed']:,}",
            ]
            for r in rows
        ]
        lines += _table(
            ["texts", "wall s", "baseline MiB", "peak MiB", "peak - baseline MiB", "failed"],
            table,
        )
        first, last = rows[0], rows[-1]
        growth = last["peak_rss_kib"] / first["peak_rss_kib"] - 1
        self.goal(
            "4",
            f"peak RSS flat from {first['n']:,} to {last['n']:,} texts (≤ "
            f"{GOAL_MEMORY_GROWTH:.0%} growth)",
            f"{growth * 100:+.1f}% ({first['peak_rss_kib'] / 1024:.0f} → "
            f"{last['peak_rss_kib'] / 1024:.0f} MiB)",
            growth <= GOAL_MEMORY_GROWTH,
            "Something is held per input; profile with tracemalloc.",
        )
        return [*lines, ""]

    def profile_lines(self) -> list[str]:
        profiles = self.results.get("profile")
        if not profiles:
            return []
        lines = [
            "## Profile of our paths (cProfile)",
            "",
            "CPU time per thread (`time.thread_time`), every thread of the run merged; what "
            "is left in blocking calls (socket reads, locks, `epoll`) is "
            "set apart as waiting and shares are of the rest. cProfile's cost per call "
            "inflates code that makes many small calls, so read the shares as a ranking. "
            "`self` is time in the function's own code, `incl.` includes what it calls; groups "
            "are by package (`builtins (C)` is C functions such as `sum`, `len`, "
            "`isinstance`, `re.findall`, called mostly from the package above them).",
            "",
        ]
        for label, p in profiles.items():
            groups = ", ".join(f"{g} {share * 100:.0f}%" for g, share in p["groups"][:8])
            files = ", ".join(
                f"`{w}` {share * 100:.1f}%" for w, share in p.get("ours_files", [])[:6]
            )
            selfs = ", ".join(f"`{w}` {share * 100:.1f}%" for w, share in p["ours_self"][:6])
            cums = ", ".join(f"`{w}` {share * 100:.0f}%" for w, share in p["ours_cum"][:5])
            lines += [
                f"- **{label}** ({p['wall']:.2f} s profiled; {p['busy']:.2f} s busy, "
                f"{p['wait']:.2f} s waiting): {groups}.",
                f"  - ours, by file: {files}",
                f"  - ours, self: {selfs}",
                f"  - ours, incl.: {cums}",
            ]
        return [*lines, ""]

    def render(self) -> str:
        errors = self.results.get("errors") or []
        body = [
            *(["## Jobs that failed", "", *(f"- {e}" for e in errors), ""] if errors else []),
            *self.per_call_lines(),
            *self.batch_lines(),
            *self.memory_lines(),
            *self.profile_lines(),
        ]
        title = "# Benchmarks" + (
            " (smoke run: tiny sizes, figures meaningless)" if self.s.smoke else ""
        )
        goals = _table(
            ["scenario", "goal", "figure", "status"],
            [[g[0], g[1], g[2], _mark(g[3])] for g in sorted(self.goals, key=lambda g: g[0])],
        )
        missed = (
            ["### Goals missed, by how much, and what bounds them", "", *self.misses, ""]
            if self.misses
            else []
        )
        return "\n".join(
            [
                title,
                "",
                *([f"> {self.note}", ""] if self.note else []),
                "Generated by `python -m benchmarks` (see `benchmarks/`); do not edit by hand. "
                "Every contender runs against the same loopback server (the testing kit's "
                "`MockOpenAIServer`, in a separate process so its CPU does not share the "
                "client's GIL), each in a fresh process of its own.",
                "",
                *self.machine_lines(),
                "",
                "## Goals",
                "",
                *goals,
                "",
                *missed,
                *body,
                "## Method",
                "",
                "- The server's vector cache is enlarged and filled with the benchmark texts "
                "before any run, so the server (not under test) answers a 100-text request in "
                "well under a millisecond of CPU.",
                "- Every timed batch run gets a fresh server (its own connection counter and a "
                "fault sequence seeded from the run number) and a fresh client; building the "
                "client is not timed, opening its connections is.",
                "- LangChain runs with `check_embedding_ctx_length=False`: the default tokenizes "
                "every text with tiktoken, which downloads its encoding on first use.",
                "- Raw clients keep their defaults (`max_retries=2`); LlamaIndex keeps its own "
                "(`max_retries=10`).",
                "",
            ]
        )
