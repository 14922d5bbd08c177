"""Run by tests/test_lifecycle.py: one AsyncResilientClient, a new event loop per call, no aclose.

Usage: python many_loops.py LOOPS [--shutdown]

Each loop is made, runs one ``embed`` and is closed; with ``--shutdown`` it awaits
``loop.shutdown_asyncgens()`` before ``close()`` (asyncio's documented cleanup). Prints one JSON
line of figures taken from outside the library: open file descriptors (``/proc/self/fd``), this
process's sockets connected to the server, official clients still alive after ``gc.collect()``
(weak references to every ``AsyncOpenAI`` the factory built) and what the server recorded.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
import weakref

from openai import AsyncOpenAI

from resilient_llm import AsyncResilientClient
from resilient_llm.testing import MockOpenAIServer


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def sockets_to(port: int) -> int:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in rows.readlines()[1:]:
                fields = row.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(os.path.join("/proc/self/fd", name)) in inodes:
                count += 1
        except OSError:
            continue
    return count


def settle(server: MockOpenAIServer, client_sockets: int) -> None:
    """Wait until the server has noticed every closed connection (it does so in its thread)."""
    deadline = time.monotonic() + 5
    while server.stats.open_connections > client_sockets and time.monotonic() < deadline:
        time.sleep(0.01)


def main() -> None:
    loops = int(sys.argv[1])
    shutdown = "--shutdown" in sys.argv[2:]
    built: list[weakref.ref[AsyncOpenAI]] = []

    def alive() -> int:
        gc.collect()
        return sum(ref() is not None for ref in built)

    with MockOpenAIServer() as server:

        def factory(http_client: object) -> AsyncOpenAI:
            made = AsyncOpenAI(
                api_key="sk-test", base_url=server.base_url, http_client=http_client, max_retries=0
            )
            built.append(weakref.ref(made))
            return made

        client = AsyncResilientClient(openai_factory=factory, deadline=20)
        fds_before = open_fds()
        peak_fds = peak_alive = 0
        for i in range(loops):
            loop = asyncio.new_event_loop()
            vector = loop.run_until_complete(client.embed(f"loop {i}"))
            assert vector, "no vector"
            if shutdown:
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            peak_fds = max(peak_fds, open_fds())
            if i % 25 == 0 or i == loops - 1:
                peak_alive = max(peak_alive, alive())
        alive_after_loops = alive()
        sockets_after_loops = sockets_to(server.port)
        settle(server, sockets_after_loops)
        figures = {
            "loops": loops,
            "built": len(built),
            "requests": server.stats.total_requests,
            "fds_before": fds_before,
            "fds_peak": peak_fds,
            "alive_after_loops": alive_after_loops,
            "peak_alive": peak_alive,
            "fds_after_loops": open_fds(),
            "sockets_after_loops": sockets_after_loops,
            "registry_after_loops": len(client._clients),
        }
        asyncio.run(client.aclose())  # from one more loop: releases what is left
        figures.update(
            alive_after_aclose=alive(),
            sockets_after_aclose=sockets_to(server.port),
            registry_after_aclose=len(client._clients),
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
