"""A `MockOpenAIServer` in its own process, for load tests (see `_support.RemoteServer`).

Usage: ``python _server_process.py '{"fail_rate": 0.2, "seed": 1, "faults": "soak"}'``. Prints the
base URL, serves until stdin closes, then prints the server's counters as one JSON line.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from resilient_llm.testing import Fault, MockOpenAIServer

# The soak's mix: rate limits, server errors, dropped connections and slow answers.
FAULT_SETS = {
    "soak": (
        Fault.status(429, retry_after=0),
        Fault.status(500),
        Fault.status(503),
        Fault.reset(),
        Fault.latency(0.05),
    ),
}


def main() -> None:
    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    faults = options.pop("faults", None)
    if faults is not None:
        options["random_faults"] = FAULT_SETS[faults]
    with MockOpenAIServer(**options) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()
        stats = dataclasses.asdict(server.stats.snapshot())
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
