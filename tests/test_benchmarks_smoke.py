"""The benchmark harness still runs end to end (tiny sizes); its timings are never asserted."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def test_smoke_run_writes_every_scenario(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = output.read_text()
    assert report.strip() == completed.stdout.strip()

    for heading in (
        "## Goals",
        "## 1. Per-call overhead",
        "## 2. Batch throughput",
        "## 3. The same batch",
        "## 4. Memory",
        "### Async `embed_batch`",
        "## 7. Streams",
        "## 8. `map`",
        "## Profile of our paths",
    ):
        assert heading in report, heading
    for row in (
        "| `embed` | resilient_llm `embed` |",
        "| `embed` | raw `embeddings.create` |",
        "| `embed` | bare `http.client` + `json` |",
        "| `chat` | resilient_llm `chat` |",
        "| `chat` | raw `chat.completions.create` |",
        "| resilient_llm `embed_batch` (async) (ours) |",
        "| resilient_llm `embed_batch` (sync) (ours) |",
        "| raw `AsyncOpenAI` + gather + Semaphore(16) |",
        "| raw `OpenAI` + 16 threads |",
        "| floor: bare `http.client` on 16 threads, JSON parsed, no vectors made |",
        "| resilient_llm `chat(stream=True)` |",
        "| resilient_llm `complete(stream=True)` |",
        "| raw `chat.completions.create(stream=True)` |",
        "| `client.map(fn, range(800))` (sync) |",
        "| `await client.map(fn, range(800))` (async) |",
        "| 200 |",
        "| 400 |",
        "| 800 |",
        "- **batch, async**",
        "- **batch, sync**",
        "- **per-call embed, sync**",
        "- **per-call chat, async**",
    ):
        assert row in report, row
    # Peers run when the bench extra is installed, and are skipped otherwise.
    # (Their rows, that is: a goal's figure names the peers that were not installed.)
    assert ("| LangChain `embed_documents`" in report) == _installed("langchain_openai")
    assert ("| LlamaIndex `get_text_embedding_batch`" in report) == _installed(
        "llama_index.embeddings.openai"
    )
    for scenario in ("| 1 |", "| 2 |", "| 3 |", "| 4 |", "| 5 |", "| 6 |", "| 7 |", "| 8 |"):
        assert scenario in report, f"no goal row for scenario {scenario}"
    # The fault run and the per-call scenarios are measured, not only listed.
    fault_section = report.split("## 3. The same batch", 1)[1].split("\n## ", 1)[0]
    assert "| resilient_llm `embed_batch` (sync) (ours) |" in fault_section
    assert "| resilient_llm `embed_batch` (async) (ours) |" in fault_section
    assert "ours (sync) ≤ 1.3x its fault-free time" in report
    assert "`embed` (sync) ≤ 0.5x raw" in report
    assert "`chat(stream=True)` (async) per chunk" in report
