"""Every example runs with no API key (against the embedded server) and does what it says."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest

from resilient_llm._http import httpx
from resilient_llm.testing import MockOpenAIServer

from .conftest import TEST_KEY

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["PYTHONWARNINGS"] = "error"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_rag_ingest_with_sample_files(tmp_path: Path) -> None:
    done = run_example("rag_ingest.py", "-o", "vectors.jsonl", cwd=tmp_path)
    assert "using the local mock server" in done.stdout
    rows = [json.loads(line) for line in (tmp_path / "vectors.jsonl").read_text().splitlines()]
    assert f"wrote {len(rows)} vectors" in done.stdout
    assert len(rows) >= 5
    assert {row["source"] for row in rows} == {"returns.txt", "shipping.txt", "warranty.txt"}
    assert all(len(row["embedding"]) == 1536 for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rag_ingest_chunks_a_folder(tmp_path: Path) -> None:
    example = load_example("rag_ingest")
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("short note")
    (tmp_path / "sub" / "b.md").write_text(" ".join(f"word{i}" for i in range(250)))
    chunks = example.load_chunks(tmp_path)
    assert [c["id"] for c in chunks] == ["a.txt#0", "sub/b.md#0", "sub/b.md#1", "sub/b.md#2"]
    words = [str(c["text"]).split() for c in chunks[1:]]
    assert words[0][-20:] == words[1][:20]  # windows overlap
    assert words[2][-1] == "word249"  # nothing lost at the end


def test_notebook_style(tmp_path: Path) -> None:
    done = run_example("notebook_style.py", cwd=tmp_path)
    assert "200 items: 200 succeeded, 0 failed" in done.stdout
    assert "20 labelled, 0 failed" in done.stdout
    assert done.stdout.rstrip().endswith("done")
    assert "sk-local-mock" not in done.stdout


# --- FastAPI ---------------------------------------------------------------------------------


def load_fastapi_example() -> ModuleType:
    pytest.importorskip("fastapi")
    return load_example("fastapi_service")


def test_fastapi_self_check(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    done = run_example("fastapi_service.py", "--self-check", cwd=tmp_path)
    assert "50 of 50 /embed requests returned 200" in done.stdout


@pytest.mark.anyio
async def test_fastapi_health_answers_fast_under_50_concurrent_requests() -> None:
    example = load_fastapi_example()
    with MockOpenAIServer(latency=1.0) as server:
        app = example.create_app(base_url=server.base_url, api_key=TEST_KEY)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                replies: list[Any] = []

                async def embed(i: int) -> None:
                    replies.append(await http.post("/embed", json={"texts": [f"text {i}"]}))

                started = time.perf_counter()
                async with anyio.create_task_group() as tasks:
                    for i in range(50):
                        tasks.start_soon(embed, i)
                    with anyio.fail_after(10):  # until the embeddings wait on the server
                        while server.stats.in_flight < 25:  # noqa: ASYNC110 -- a server-side counter
                            await anyio.sleep(0.005)
                    timings = []
                    for _ in range(3):
                        health_started = time.perf_counter()
                        health = await http.get("/health")
                        timings.append(time.perf_counter() - health_started)
                        assert health.status_code == 200
                    pending = 50 - len(replies)
                elapsed = time.perf_counter() - started

    assert max(timings) < 0.3, timings  # an embed waits 1 s on the server
    assert pending > 0  # /health was measured while embeds were still in flight
    assert [reply.status_code for reply in replies] == [200] * 50
    assert all(len(reply.json()["embeddings"][0]) == 1536 for reply in replies)
    assert elapsed < 8  # concurrent, not 50 x 1 s one after the other
    assert server.stats.total_requests == 50


@pytest.mark.anyio
async def test_fastapi_reports_a_failed_text_and_summarizes() -> None:
    example = load_fastapi_example()
    with MockOpenAIServer() as server:
        app = example.create_app(base_url=server.base_url, api_key=TEST_KEY)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                embedded = await http.post(
                    "/embed", json={"texts": ["fine", "has POISON", "fine too"], "dimensions": 4}
                )
                summary = await http.post(
                    "/summarize", json={"text": "a long day at the office", "max_words": 5}
                )
                invalid = await http.post("/embed", json={"texts": []})

    assert embedded.status_code == 200
    body = embedded.json()
    assert [v is None for v in body["embeddings"]] == [False, True, False]
    assert len(body["embeddings"][0]) == 4
    assert [(f["index"], f["status"]) for f in body["failures"]] == [(1, 400)]
    assert "traceback" not in body["failures"][0]
    assert summary.json() == {"summary": "Summary: a long day at the office"}
    assert invalid.status_code == 422


@pytest.mark.anyio
async def test_fastapi_streams_a_reply_to_the_browser() -> None:
    from resilient_llm.testing import Fault, chat_reply_text

    example = load_fastapi_example()
    prompt = "one two three four"
    with MockOpenAIServer(stream_chunk_interval=0.02) as server:
        server.script(Fault.status(429, retry_after=0), path="/v1/chat/completions")
        app = example.create_app(base_url=server.base_url, api_key=TEST_KEY)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                pieces: list[str] = []
                async with http.stream("POST", "/chat", json={"prompt": prompt}) as response:
                    async for piece in response.aiter_text():
                        pieces.append(piece)
                health = await http.get("/health")
    assert response.status_code == 200
    assert "".join(pieces) == chat_reply_text(prompt)
    # It was streamed from the server (httpx's ASGI transport hands the body over whole).
    chunks_sent = server.requests[-1].chunks_sent
    assert chunks_sent is not None
    assert chunks_sent > 1
    assert health.status_code == 200
    # The 429 before the first chunk was retried: the browser never saw it.
    assert server.stats.responses_by_status == {429: 1, 200: 1}


# --- README ----------------------------------------------------------------------------------

README = EXAMPLES.parent / "README.md"


def readme_snippets() -> list[str]:
    blocks: list[str] = []
    lines: list[str] | None = None
    for line in README.read_text(encoding="utf-8").splitlines():
        if lines is None and line.strip() == "```python":
            lines = []
        elif lines is not None and line.strip() == "```":
            blocks.append("\n".join(lines) + "\n")
            lines = None
        elif lines is not None:
            lines.append(line)
    return blocks


@pytest.mark.parametrize("number", range(len(readme_snippets())))
def test_readme_python_snippets_run(
    number: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = readme_snippets()[number]
    if "fastapi" in code:
        pytest.importorskip("fastapi")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.txt").write_text("".join(f"line {i}\n" for i in range(300)))
    with MockOpenAIServer() as server:
        # The snippets take their settings from the environment, as openai.OpenAI does.
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
        exec(compile(code, f"README.md python block {number + 1}", "exec"), {"__name__": "readme"})
