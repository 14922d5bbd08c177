"""A process that runs a Batch API job and can die (SIGKILL) at a chosen moment.

Usage: ``python worker.py BASE_URL STATE COUNT MOMENT OUT``; ``MOMENT`` is ``after_upload``
(the upload answered, its file id not yet written down), ``after_create`` (the batch created,
its id not yet written down) or ``none``. On success the result goes to ``OUT`` as JSON.
The kill comes from the official client's methods, patched here: the library is untouched.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import openai.resources.batches
import openai.resources.files

from resilient_llm import ResilientClient
from resilient_llm.batch_api import BatchJob, BatchJobOptions


def die_after(cls: Any, name: str) -> None:
    original = getattr(cls, name)

    def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return result  # never reached

    setattr(cls, name, patched)


def main() -> None:
    base_url, state, count, moment, out = sys.argv[1:6]
    if moment == "after_upload":
        die_after(openai.resources.files.Files, "create")
    elif moment == "after_create":
        die_after(openai.resources.batches.Batches, "create")
    texts = [f"document number {i}" for i in range(int(count))]
    options = BatchJobOptions(max_lines=10, poll_interval=0.01, max_poll_interval=0.05)
    with ResilientClient(api_key="sk-test-worker-0123456789", base_url=base_url) as client:
        result = BatchJob.embeddings(
            client, texts, state=state, dimensions=8, options=options
        ).run()
    with open(out, "w") as stream:
        json.dump({"values": result.values, "failed": [f.index for f in result.failures]}, stream)


if __name__ == "__main__":
    main()
