"""RAG ingestion: chunk a folder of text files, embed every chunk in one batch, write the vectors.

    python examples/rag_ingest.py [FOLDER] [-o vectors.jsonl]

With ``OPENAI_API_KEY`` set it calls OpenAI. Without it, it starts the library's loopback mock
server (deterministic vectors, no network), so the script runs anywhere. Without FOLDER it writes
a few sample files to a temporary folder first.

Each output line is ``{"id": "file.txt#3", "source": ..., "chunk": 3, "text": ..., "embedding":
[...]}``. A chunk that fails (a 400, a timeout after all retries...) is listed, never dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from resilient_llm import ResilientClient

CHUNK_WORDS = 120
OVERLAP_WORDS = 20

SAMPLES = {
    "returns.txt": (
        "Customers may return any item within 30 days of delivery. Items must be unused and in "
        "their original packaging.\n\nRefunds are issued to the original payment method within "
        "five business days of receiving the return. Shipping costs are not refunded unless the "
        "item arrived damaged."
    ),
    "shipping.txt": (
        "Standard shipping takes three to five business days. Express shipping takes one to two "
        "business days and costs 12 euros.\n\nOrders placed before 2 pm ship the same day. We "
        "ship to every country in the European Union, Norway, Switzerland and the United Kingdom."
    ),
    "warranty.txt": " ".join(
        f"Clause {n}: the warranty covers manufacturing defects for two years; it does not cover "
        "wear, accidents or repairs by third parties."
        for n in range(1, 40)
    ),
}


def chunk_words(text: str, size: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS) -> list[str]:
    """Windows of ``size`` words, each sharing ``overlap`` words with the previous one."""
    words = text.split()
    if len(words) <= size:
        return [" ".join(words)] if words else []
    step = size - overlap
    return [" ".join(words[i : i + size]) for i in range(0, len(words) - overlap, step)]


def load_chunks(folder: Path) -> list[dict[str, object]]:
    chunks: list[dict[str, object]] = []
    for path in sorted(folder.rglob("*.txt")) + sorted(folder.rglob("*.md")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, chunk in enumerate(chunk_words(text)):
            source = str(path.relative_to(folder))
            chunks.append(
                {"id": f"{source}#{number}", "source": source, "chunk": number, "text": chunk}
            )
    return chunks


@contextlib.contextmanager
def connection() -> Iterator[tuple[str | None, str | None]]:
    """``(base_url, api_key)``: OpenAI when OPENAI_API_KEY is set (None, None: the environment
    decides); otherwise the embedded loopback server."""
    if os.environ.get("OPENAI_API_KEY"):
        yield None, None
        return
    from resilient_llm.testing import MockOpenAIServer

    with MockOpenAIServer(latency=(0.01, 0.03)) as server:
        print(f"OPENAI_API_KEY is not set: using the local mock server at {server.base_url}")
        yield server.base_url, "sk-local-mock"


def ingest(folder: Path, output: Path) -> int:
    chunks = load_chunks(folder)
    print(f"{len(chunks)} chunks from {folder}")
    with (
        connection() as (base_url, api_key),
        ResilientClient(base_url=base_url, api_key=api_key, deadline=60) as client,
    ):
        result = client.embed_batch(
            [chunk["text"] for chunk in chunks],
            batch_size=256,
            progress=sys.stderr.isatty(),
        )
    with output.open("w", encoding="utf-8") as file:
        for index, vector in result.succeeded():
            file.write(json.dumps({**chunks[index], "embedding": vector}) + "\n")
    print(result.summary())
    for failure in result.failures:
        print(
            f"not embedded: {chunks[failure.index]['id']}: {failure.error_type}: {failure.message}"
        )
    print(f"wrote {result.stats.succeeded} vectors to {output}")
    return 0 if result.ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="folder of .txt / .md files")
    parser.add_argument("-o", "--output", type=Path, default=Path("vectors.jsonl"))
    args = parser.parse_args()
    if args.folder is not None:
        return ingest(args.folder, args.output)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, text in SAMPLES.items():
            (folder / name).write_text(text, encoding="utf-8")
        print(f"no folder given: wrote {len(SAMPLES)} sample files to {folder}")
        return ingest(folder, args.output)


if __name__ == "__main__":
    sys.exit(main())
