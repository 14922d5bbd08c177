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
    FAULT_RETRY_AFTER,
    GOAL_CHAT_RATIO,
    GOAL_CONNECTION_SLACK,
    GOAL_EMBED_RATIO,
    GOAL_FAULT_PEER_SPEEDUP,
    GOAL_FAULT_SLOWDOWN,
    GOAL_HEARTBEAT_P99_MS,
    GOAL_IDEAL_FRACTION,
    GOAL_MAP_RATIO,
    GOAL_MEMORY_GROWTH,
    GOAL_STREAM_RATIO,
    RESULTS,
    Settings,
    median,
)
from benchmarks.contenders import CONTENDERS

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
FLOOR = "floor-threads"
SHORT_BACKOFF = "ours-sync-short-backoff"
OWN_PAUSE = "ours-sync-own-pause"


def _is_peer(key: str) -> bool:
    contender = CONTENDERS.get(key)
    return key not in OURS and contender is not None and not contender.reference


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


def _paired(ours: list[float], raw: list[float]) -> float:
    """The median of the per-repeat ratios: each repeat interleaves both, so a slow moment of
    the machine falls on both sides of its ratio."""
    return median([a / b for a, b in zip(ours, raw, strict=True)])


def _batch_index(batch: list[dict[str, Any]], faults: bool) -> dict[str, dict[str, Any]]:
    return {e["key"]: e for e in batch if e["faults"] == faults}


def _load(info: dict[str, Any], key: str) -> str:
    load = info.get(key)
    return "—" if not load else f"{load[0]:.2f}"


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
        self.misses: list[tuple[str, str]] = []  # scenario, text

    def goal(self, scenario: str, goal: str, figure: str, met: bool | None, why: str = "") -> None:
        self.goals.append((scenario, goal, figure, met))
        if met is False and why:
            self.misses.append((scenario, f"- **{scenario}: {goal}** — {figure}. {why}"))

    # -- sections ---------------------------------------------------------------------------

    def machine_lines(self) -> list[str]:
        info = self.info
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        elapsed = info.get("elapsed")
        took = f" The whole run took {elapsed / 60:.1f} min." if elapsed else ""
        return [
            f"- Machine: {info['cores']} cores ({info['usable_cores']} usable), {info['cpu']}; "
            f"load average (1 min) {_load(info, 'load_before')} at the start, "
            f"{_load(info, 'load_after')} at the end (other work on the machine takes CPU from "
            "the client and the server alike: read the wall times with it)",
            f"- Python {info['python']} ({info['implementation']}), {info['platform']}",
            f"- Packages: {versions}",
            f"- Run: {info['date']}, {'smoke' if self.s.smoke else 'full'} mode, "
            f"median of {self.s.repeats} run(s) per figure; the server runs in a process of its "
            f"own on loopback.{took}",
        ]

    # -- 1. per call ------------------------------------------------------------------------

    def per_call_lines(self) -> list[str]:
        rows = self.results.get("per_call")
        if rows is None:
            return []
        s = self.s
        lines = [
            f"## 1. Per-call overhead: {s.per_call_n:,} sequential calls, zero-latency server",
            "",
            f"Microseconds per call (median of {s.per_call_repeats} repeats); `x raw` is the "
            "median over the repeats of the time over the raw client's (each repeat interleaves "
            "the contenders), so lower is better. Peers (LangChain, LlamaIndex) make a quarter "
            "of the calls: they only set the scale. Our `embed` goes straight to the official "
            "client's own HTTP client (the direct route of SPEC §1: the request the SDK would "
            "build, without its per-request machinery); `chat` goes through the SDK.",
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
                    ratio = _paired(row["samples"], raw["samples"]) if raw else math.nan
                    cells += [_f(us, 0), _x(ratio)]
                table.append(cells)
        lines += _table(["call", "contender", "sync µs", "x raw", "async µs", "x raw"], table)
        for endpoint, limit in (("embed", GOAL_EMBED_RATIO), ("chat", GOAL_CHAT_RATIO)):
            for is_async in (False, True):
                ours = by.get((endpoint, "ours", is_async))
                raw = by.get((endpoint, "raw", is_async))
                if not ours or not raw:
                    continue
                ours_us, raw_us = median(ours["samples"]) * 1e6, median(raw["samples"]) * 1e6
                ratio = _paired(ours["samples"], raw["samples"])
                kind = "async" if is_async else "sync"
                why = f"Over the goal by {(ratio / limit - 1) * 100:.1f}%."
                bypass = by.get((endpoint, "http-only", is_async))
                if bypass:
                    floor = median(bypass["samples"]) * 1e6
                    why += (
                        f" The HTTP package alone (openai's own HTTP client, a prepared request, "
                        f"no SDK, no checks) takes {floor:,.0f} µs = "
                        f"{_paired(bypass['samples'], raw['samples']):.2f}x raw: "
                        "ours sends on that same client, so that is its floor; ours adds "
                        f"{ours_us - floor:,.0f} µs (the answer's checks, the deadline "
                        "scope, the call record)."
                    )
                else:
                    why += (
                        f" Ours adds {ours_us - raw_us:,.0f} µs a call to the SDK's own call "
                        "(the deadline scope, the answer's check, the call record)."
                    )
                self.goal(
                    "1",
                    f"`{endpoint}` ({kind}) ≤ {limit}x raw",
                    f"{ratio:.3f}x raw ({ours_us:,.0f} vs {raw_us:,.0f} µs)",
                    ratio <= limit,
                    why,
                )
        return [*lines, ""]

    # -- 7. streams -------------------------------------------------------------------------

    def stream_lines(self) -> list[str]:
        rows = self.results.get("stream")
        if rows is None:
            return []
        s = self.s
        by = {(r["key"], r["is_async"]): r for r in rows}
        items = max((r["items"] for r in rows if r["key"] == "raw"), default=0)
        lines = [
            f"## 7. Streams: {s.stream_n:,} sequential streamed chats, zero-latency server "
            f"({items} chunks each)",
            "",
            "First chunk: mean µs from the call to the first item (for `complete`, which yields "
            "text only, to the first text; the raw stream's first chunk carries no text, so "
            "`complete` is compared with the raw stream's first text). Per chunk: mean µs "
            f"after the first item, over the {max(1, items - 1)} chunks the server sends after "
            f"it. Medians of {s.per_call_repeats} repeats; `x raw` as above.",
            "",
        ]
        table = []
        for key in ("ours-chat", "ours-complete", "raw"):
            cells = [""]
            for is_async in (False, True):
                row = by.get((key, is_async))
                raw = by.get(("raw", is_async))
                if row is None or raw is None:
                    cells += ["—"] * 4
                    continue
                cells[0] = row["label"]
                first, raw_first = self._first(row, key), self._first(raw, key)
                chunk = median(row["after_first"]) / max(1, items - 1)
                raw_chunk = median(raw["after_first"]) / max(1, items - 1)
                first_ratio = _paired(row[self._first_field(key)], raw[self._first_field(key)])
                chunk_ratio = _paired(row["after_first"], raw["after_first"])
                cells += [
                    _f(first * 1e6, 0),
                    _x(first_ratio),
                    _f(chunk * 1e6, 1),
                    _x(chunk_ratio),
                ]
                if key != "raw":
                    kind = "async" if is_async else "sync"
                    call = "chat" if key == "ours-chat" else "complete"
                    for what, ours_v, raw_v, ratio in (
                        ("first chunk", first, raw_first, first_ratio),
                        ("per chunk", chunk, raw_chunk, chunk_ratio),
                    ):
                        self.goal(
                            "7",
                            f"`{call}(stream=True)` ({kind}) {what} ≤ {GOAL_STREAM_RATIO}x raw",
                            f"{ratio:.3f}x raw ({ours_v * 1e6:,.1f} vs {raw_v * 1e6:,.1f} µs)",
                            ratio <= GOAL_STREAM_RATIO,
                            f"Over by {(ratio / GOAL_STREAM_RATIO - 1) * 100:.1f}%: "
                            f"{(ours_v - raw_v) * 1e6:,.1f} µs more "
                            + (
                                "to open the stream (the attempt's deadline scope and the call "
                                "state around the SDK's own call)."
                                if what == "first chunk"
                                else "a chunk (the deadline check and the text accounting "
                                "around the SDK's own iterator)."
                            ),
                        )
            table.append(cells)
        lines += _table(
            [
                "contender",
                "sync first chunk µs",
                "x raw",
                "sync per chunk µs",
                "x raw",
                "async first chunk µs",
                "x raw",
                "async per chunk µs",
                "x raw",
            ],
            table,
        )
        return [*lines, ""]

    @staticmethod
    def _first_field(key: str) -> str:
        return "first_text" if key == "ours-complete" else "first"

    def _first(self, row: dict[str, Any], key: str) -> float:
        return median(row[self._first_field(key)])

    # -- 2, 5, 6. the batch ---------------------------------------------------------------

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
            "Wall seconds are medians; `of ideal` is the ideal "
            f"{ideal:.2f} s (ceil({s.requests} / {s.concurrency}) x {s.latency * 1e3:.0f} ms) "
            "over the wall time; `speed x raw` is the raw client's time over this one (async "
            "rows against raw async + gather, sync rows against raw + threads). Client CPU is "
            "the process's CPU seconds during the batch (all threads): near the wall time means "
            "the client is CPU-bound. `mean in flight` is how many requests the server had in "
            "hand on average (from its own log). Heartbeat: how late a task sleeping "
            f"{s.heartbeat_interval * 1e3:.0f} ms wakes up during the batch (async rows). "
            f"Sequential peers (one request at a time) run {s.slow_peer_repeats} time(s), the "
            f"others {s.repeats}. The floor row is the least any client can take here: bare "
            "sockets, answers parsed as JSON, no vector made.",
            "",
        ]
        rows = []
        for key, entry in clean.items():
            raw = clean.get(RAW_OF[entry["is_async"]])
            wall = _wall(entry)
            runs = _runs(entry)
            conns = [r["connections"] for r in runs]
            beats = [r["heartbeat"] for r in runs if r.get("heartbeat")]
            lost = max(r["lost"] for r in runs)
            rows.append(
                [
                    entry["label"] + (" (ours)" if key in OURS else ""),
                    _f(wall),
                    f"{ideal / wall * 100:.0f}%",
                    _x(_wall(raw) / wall) if raw and _is_peer(RAW_OF[entry["is_async"]]) else "—",
                    _f(s.batch_texts / wall, 0),
                    _f(median([r["cpu_seconds"] for r in runs])),
                    _f(self._in_flight(entry), 1),
                    f"{min(conns)}-{max(conns)}" if min(conns) != max(conns) else str(conns[0]),
                    _f(median([b["p99_ms"] for b in beats]), 1) if beats else "—",
                    _f(max(b["max_ms"] for b in beats), 1) if beats else "—",
                    str(lost) if lost else "0",
                ]
            )
        lines += _table(
            [
                "contender",
                "wall s",
                "of ideal",
                "speed x raw",
                "texts/s",
                "client CPU s",
                "mean in flight",
                "connections",
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

    @staticmethod
    def _in_flight(entry: dict[str, Any]) -> float:
        values = [r["extra"].get("mean_in_flight") for r in _runs(entry)]
        return median([v for v in values if v is not None])

    def _bounds(self, clean: dict[str, dict[str, Any]]) -> list[str]:
        """Achieved against ideal for our rows, and what the profile says bounds the rest."""
        s = self.s
        profiles = self.results.get("profile") or {}
        lines = []
        floor = clean.get(FLOOR)
        if floor is not None:
            lines.append(
                f"- **The floor** (bare sockets, no vectors made) takes {_wall(floor):.2f} s "
                f"({s.ideal_seconds / _wall(floor) * 100:.0f}% of the ideal) on this machine "
                "and server: what is left between it and the ideal is the loopback, the "
                "server and the machine's other work, not any client."
            )
        for key in OURS:
            entry = clean.get(key)
            if entry is None:
                continue
            kind = "async" if entry["is_async"] else "sync"
            wall = _wall(entry)
            cpu = median([r["cpu_seconds"] for r in _runs(entry)])
            text = (
                f"- **Ours ({kind})** reaches {s.ideal_seconds / wall * 100:.0f}% of the ideal "
                f"({wall:.2f} s against {s.ideal_seconds:.2f} s), with {cpu:.2f} CPU s in "
                f"{wall:.2f} s ({cpu / wall * 100:.0f}% of the wall time) and "
                f"{self._in_flight(entry):.1f} of {s.concurrency} requests in flight on average"
            )
            profile = profiles.get(f"batch, {kind}")
            if profile:
                top = ", ".join(
                    f"`{w}` {share * 100:.0f}%" for w, share in profile["ours_files"][:3]
                )
                groups = ", ".join(
                    f"{g} {share * 100:.0f}%"
                    for g, share in profile["groups"][:6]
                    if g != "resilient_llm"
                )
                text += (
                    f". Profiled, {dict(profile['groups']).get('resilient_llm', 0) * 100:.0f}% "
                    f"of its CPU is in resilient_llm (by file: {top}); the rest: {groups}"
                )
                collections = profile.get("gc")
                if collections:
                    text += (
                        f"; the garbage collector ran {collections['collections']} times for "
                        f"{collections['seconds']:.2f} s under the profiler, most of it "
                        "traversing the 256-float lists of the vectors kept"
                    )
            lines.append(text + ".")
        return [*lines, ""] if lines else []

    def _batch_goals(self, clean: dict[str, dict[str, Any]]) -> None:
        s = self.s
        floor = clean.get(FLOOR)
        for key in OURS:
            entry = clean.get(key)
            if entry is None:
                continue
            kind = "async" if entry["is_async"] else "sync"
            wall = _wall(entry)
            fraction = s.ideal_seconds / wall
            cpu = median([r["cpu_seconds"] for r in _runs(entry)])
            floor_text = (
                f" The floor (bare sockets, no vectors) takes {_wall(floor):.2f} s here "
                f"({s.ideal_seconds / _wall(floor) * 100:.0f}% of ideal)."
                if floor is not None
                else ""
            )
            self.goal(
                "2",
                f"ours ({kind}) ≥ {GOAL_IDEAL_FRACTION:.2f} of ideal",
                f"{fraction:.3f} of ideal ({wall:.3f} s vs {s.ideal_seconds:.2f} s)",
                fraction >= GOAL_IDEAL_FRACTION,
                f"The client used {cpu:.2f} CPU s in {wall:.2f} s ({cpu / wall * 100:.0f}%) and "
                f"kept {self._in_flight(entry):.1f} of {s.concurrency} requests in flight on "
                "average: with one GIL, every answer's work (reading 140 KB, making 25,600 "
                "Python floats, the garbage collector's passes over the vectors kept) waits "
                "its turn while answers arrive together, so requests go out late."
                + floor_text
                + " Profile below.",
            )
            conns = max(r["connections"] for r in _runs(entry))
            limit = s.concurrency + GOAL_CONNECTION_SLACK
            self.goal(
                "6",
                f"ours ({kind}) opens ≤ {limit} connections",
                f"{conns} (peak {max(r['peak_in_flight'] for r in _runs(entry))} in flight)",
                conns <= limit,
                f"{conns - limit} more than the goal. "
                + (
                    "The sync driver runs twice as many threads as requests in flight (a unit "
                    "that backs off or decodes leaves the wire to another) and each thread "
                    "has its own official client (SPEC §5), so each opens its own connection; "
                    "at most "
                    f"{max(r['peak_in_flight'] for r in _runs(entry))} are in use at once."
                    if not entry["is_async"]
                    else ""
                ),
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
                    f"Over by {p99 - GOAL_HEARTBEAT_P99_MS:.1f} ms. With about a hundred "
                    "heartbeats in a batch, p99 is its one or two worst: they fall on the "
                    "garbage collector's passes over the young vectors (the 20,000 lists of "
                    "256 floats the batch returns"
                    + self._gc_passes(entry)
                    + "; a pass holds the GIL whichever thread triggers it) and on bursts of "
                    "answers read together; the machine's other work adds its own delays.",
                )

    @staticmethod
    def _gc_passes(entry: dict[str, Any]) -> str:
        stats = [r["extra"]["gc"] for r in _runs(entry) if r["extra"].get("gc")]
        if not stats:
            return ""
        passes = [median([g["passes"][n] for g in stats]) for n in range(3)]
        longest = [max(g["longest_ms"][n] for g in stats) for n in range(3)]
        text = (
            f": {passes[0]:.0f} generation-0 passes a batch (longest {longest[0]:.0f} ms), "
            f"{passes[1]:.0f} of generation 1 (longest {longest[1]:.0f} ms)"
        )
        if max(g["passes"][2] for g in stats):
            text += f", and in some runs a full pass ({longest[2]:.0f} ms)"
        return text

    # -- 3. faults -------------------------------------------------------------------------

    def _fault_lines(
        self, clean: dict[str, dict[str, Any]], faulty: dict[str, dict[str, Any]]
    ) -> list[str]:
        s = self.s
        lines = [
            f"## 3. The same batch with {s.fail_rate:.0%} random faults (500s, and 429s with "
            f"`retry-after: {FAULT_RETRY_AFTER:g}`, seeded {s.seed}…)",
            "",
            "Items lost are what the caller gets back: when `asyncio.gather` or `pool.map` raises, "
            "the batches that did succeed are lost with it (the time is then the time to the "
            "exception). Requests are what the server received (retries included); retries are "
            "our own count. The two diagnostic rows of ours show what the fault time is made "
            "of: a shorter back-off (a setting users have), and a Retry-After that delays only "
            "its own request instead of pausing the batch (not a setting).",
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
                    _f(self._in_flight(entry), 1),
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
                "mean in flight",
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
                f"batch about once in {1 / (1 - (1 - s.fail_rate**5) ** s.requests):.0f} runs."
                + self._losing_seeds(entry),
            )
            wall, base = _wall(entry), _wall(clean.get(key))
            if not math.isnan(base):
                ratio = wall / base
                self.goal(
                    "3",
                    f"ours ({kind}) ≤ {GOAL_FAULT_SLOWDOWN}x its fault-free time",
                    f"{ratio:.2f}x ({wall:.2f} s vs {base:.2f} s)",
                    ratio <= GOAL_FAULT_SLOWDOWN,
                    self._fault_bound(entry, faulty),
                )
            peers = {
                k: e
                for k, e in faulty.items()
                if _is_peer(k) and not any(r["lost"] for r in _runs(e))
            }
            failing = sorted(
                e["label"]
                for k, e in faulty.items()
                if _is_peer(k) and any(r["lost"] for r in _runs(e))
            )
            if peers or failing:
                fastest = min(peers, key=lambda k: _wall(peers[k])) if peers else None
                speedup = _wall(peers[fastest]) / wall if fastest else math.inf
                figure = (
                    f"{speedup:.2f}x the fastest peer that returned everything "
                    f"({peers[fastest]['label']}, {_wall(peers[fastest]):.2f} s)"
                    if fastest
                    else "no peer returned everything"
                )
                if failing:
                    figure += f"; {len(failing)} peer(s) lost items and did not finish"
                # A peer that was not installed is not beaten: without any peer that finished,
                # the goal is not measured rather than met.
                absent = sorted(
                    c.label
                    for k, c in CONTENDERS.items()
                    if _is_peer(k) and c.under_faults and k not in faulty
                )
                if absent:
                    figure += f"; not run (not installed): {', '.join(absent)}"
                self.goal(
                    "3",
                    f"ours ({kind}) ≥ {GOAL_FAULT_PEER_SPEEDUP:.0f}x faster than every peer",
                    figure,
                    None if absent and not peers else speedup >= GOAL_FAULT_PEER_SPEEDUP,
                    "Ours waits out a back-off like the peer's (exponential from 0.5 s) and "
                    f"honours every Retry-After. {self._fault_bound(entry, faulty)}",
                )

    def _losing_seeds(self, entry: dict[str, Any]) -> str:
        seeds = [self.s.seed + n for n, r in enumerate(_runs(entry)) if r["lost"]]
        if not seeds:
            return ""
        return (
            " The fault sequences are seeded (run k of every contender, counted from 0, gets "
            f"seed {self.s.seed} + k): the loss came in the run seeded "
            + ", ".join(map(str, seeds))
            + ", whose sequence the other contenders met in another order."
        )

    def _fault_bound(self, entry: dict[str, Any], faulty: dict[str, dict[str, Any]]) -> str:
        runs = _runs(entry)
        limited = median([float(r["extra"]["faults"].get("status_429", 0)) for r in runs])
        text = (
            f"The server answered about {limited:.0f} requests with 429 and `retry-after: "
            f"{FAULT_RETRY_AFTER:g}`; each pauses every worker of the batch for "
            f"{FAULT_RETRY_AFTER:g} s (the batch's limiter, SPEC §10), so the pipe drains at "
            "each one; the 500s are retried after a full-jitter back-off from 0.5 s (SPEC §4), "
            "and the last of them to come back sets the end of the batch."
        )
        diagnostics = []
        for key, what in (
            (SHORT_BACKOFF, "with `RetryPolicy(base_delay=0.05)`"),
            (OWN_PAUSE, "with each Retry-After delaying only its own request"),
        ):
            other = faulty.get(key)
            if other is not None:
                diagnostics.append(f"{what} the sync batch takes {_wall(other):.2f} s")
        if diagnostics:
            text += " Measured: " + "; ".join(diagnostics) + "."
        return text

    # -- 4. memory -------------------------------------------------------------------------

    def memory_lines(self) -> list[str]:
        memory = self.results.get("memory")
        if not memory:
            return []
        rows = memory["sizes"] if isinstance(memory, dict) else memory
        lines = [
            "## 4. Memory",
            "",
            "### Sync `iter_embed_batch` over a generator, vectors dropped as they arrive",
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
        repeated = memory.get("repeated") if isinstance(memory, dict) else None
        if repeated:
            lines += [
                "",
                f"### Async `embed_batch` of {self.s.batch_texts:,} texts, "
                f"{len(repeated)} times in one process",
                "",
                "The kernel's peak RSS is reset before each run; RSS after is measured once the "
                "result is dropped.",
                "",
            ]
            lines += _table(
                ["run", "wall s", "RSS before MiB", "peak MiB", "RSS after MiB", "failed"],
                [
                    [
                        str(r["run"]),
                        _f(r["seconds"]),
                        _f(r["rss_before_kib"] / 1024, 1),
                        _f(r["peak_rss_kib"] / 1024, 1) if r["peak_rss_kib"] else "—",
                        _f(r["rss_after_kib"] / 1024, 1),
                        f"{r['failed']:,}",
                    ]
                    for r in repeated
                ],
            )
            peaks = [r["peak_rss_kib"] for r in repeated if r["peak_rss_kib"]]
            if len(peaks) == len(repeated) and len(peaks) > 1:
                growth = max(peaks[1:]) / peaks[0] - 1
                self.goal(
                    "4",
                    f"peak RSS flat over {len(peaks)} repeated async batches (≤ "
                    f"{GOAL_MEMORY_GROWTH:.0%} growth)",
                    f"{growth * 100:+.1f}% ("
                    + " → ".join(f"{p / 1024:.0f}" for p in peaks)
                    + " MiB)",
                    growth <= GOAL_MEMORY_GROWTH,
                    "A batch leaves something behind; compare tracemalloc snapshots between runs.",
                )
        return [*lines, ""]

    # -- 8. map ----------------------------------------------------------------------------

    def map_lines(self) -> list[str]:
        rows = self.results.get("map")
        if not rows:
            return []
        by = {r["key"]: r for r in rows}
        lines = [
            f"## 8. `map` of {self.s.map_items:,} trivial items (issue 13)",
            "",
            "The function returns its item: what is measured is the batch machinery (bounds, "
            "order, accounting). Both clients keep their defaults (`max_concurrency=8`).",
            "",
        ]
        lines += _table(
            ["form", "wall s", "CPU s", "items/s", "succeeded"],
            [
                [
                    r["label"],
                    _f(median(r["walls"]), 3),
                    _f(median(r["cpus"]), 3),
                    _f(self.s.map_items / median(r["walls"]), 0),
                    f"{min(r['succeeded']):,}",
                ]
                for r in rows
            ],
        )
        if "sync" in by and "async" in by:
            sync, aio = median(by["sync"]["walls"]), median(by["async"]["walls"])
            ratio = aio / sync
            self.goal(
                "8",
                f"async `map` within {GOAL_MAP_RATIO:.0f}x of sync",
                f"{ratio:.2f}x ({aio:.3f} s vs {sync:.3f} s)",
                ratio <= GOAL_MAP_RATIO,
                "Each item still costs the async driver a task switch and a cancel scope "
                "that the sync driver does not pay.",
            )
        return [*lines, ""]

    # -- profile ---------------------------------------------------------------------------

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
            "`isinstance`, `array.tolist`, called mostly from the package above them).",
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
            *self.stream_lines(),
            *self.map_lines(),
            *self.profile_lines(),
        ]
        title = "# Benchmarks" + (
            " (smoke run: tiny sizes, figures meaningless)" if self.s.smoke else ""
        )
        order = {str(n): n for n in range(1, 10)}
        goals = _table(
            ["scenario", "goal", "figure", "status"],
            [
                [g[0], g[1], g[2], _mark(g[3])]
                for g in sorted(self.goals, key=lambda g: order.get(g[0], 99))
            ],
        )
        misses = [text for _, text in sorted(self.misses, key=lambda m: order.get(m[0], 99))]
        missed = (
            ["### Goals missed, by how much, and what bounds them", "", *misses, ""]
            if misses
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
                "- The library runs with its defaults (SPEC §11); the contenders that do not "
                "are labelled as such.",
                "- LangChain runs with `check_embedding_ctx_length=False`: the default tokenizes "
                "every text with tiktoken, which downloads its encoding on first use.",
                "- Raw clients keep their defaults (`max_retries=2`); LlamaIndex keeps its own "
                "(`max_retries=10`).",
                "",
                *([] if self.s.smoke else separate_reports()),
            ]
        )


SEPARATE = {
    "rate_limits": "python -m benchmarks.rate_limits --save",
    "ray_data": "python -m benchmarks.ray_data --save",
}


def separate_reports() -> list[str]:
    """The last reports of the benchmarks that run on their own (they need Redis, Ray, minutes).

    Each script saves its report (dated) under ``benchmarks/results/``; it is copied here.
    """
    lines: list[str] = []
    for name, command in SEPARATE.items():
        path = RESULTS / f"{name}.md"
        if not path.exists():
            lines += [f"## `{command}`", "", "Not run yet.", ""]
            continue
        text = path.read_text().strip()
        heading, _, rest = text.partition("\n")
        lines += [
            heading,
            "",
            f"From `{command}` (its own run; see its docstring).",
            "",
            rest.strip(),
            "",
        ]
    return lines
