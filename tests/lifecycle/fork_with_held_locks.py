"""Run by tests/test_lifecycle.py: fork while another thread holds every lock of the lifecycle.

A helper thread takes the registry lock of a ``ResilientClient``, of an ``AsyncResilientClient``
and of a ``PerProcess`` holder, and keeps them while the main thread forks. The child, where
that thread does not exist, must still build and use a sync client, an async client and the
holder's object. The parent waits for the child with a deadline and kills it if it hangs.

Prints ``child ok`` and exits 0 when the child did everything; exits 3 if the child hung.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import warnings

from resilient_llm import AsyncResilientClient, ResilientClient
from resilient_llm._lifecycle import PerProcess
from resilient_llm.testing import MockOpenAIServer

CHILD_DEADLINE = 20.0


def main() -> int:
    with MockOpenAIServer() as server:
        client = ResilientClient(api_key="sk-test", base_url=server.base_url, deadline=10)
        aclient = AsyncResilientClient(api_key="sk-test", base_url=server.base_url, deadline=10)
        holder = PerProcess(lambda: {"pid": os.getpid()})
        client.embed("parent")  # the registries have clients and slots to inherit
        holder.get()

        locks = [client._clients._lock, aclient._clients._lock, holder._lock]
        held, release = threading.Event(), threading.Event()

        def hold_every_lock() -> None:
            for lock in locks:
                lock.acquire()
            held.set()
            release.wait()
            for lock in locks:
                lock.release()

        holder_thread = threading.Thread(target=hold_every_lock)
        holder_thread.start()
        held.wait()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, on 3.12+
            pid = os.fork()
        if pid == 0:  # the child: the thread holding the locks does not exist here
            code = 1
            try:
                assert client.embed("child, sync")
                assert asyncio.run(aclient.embed("child, async"))
                assert holder.get() == {"pid": os.getpid()}, "the child got the parent's object"
                code = 0
            finally:
                sys.stdout.flush()
                os._exit(code)
        release.set()
        holder_thread.join()
        deadline = time.monotonic() + CHILD_DEADLINE
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                print(f"child hung for {CHILD_DEADLINE:.0f} s", file=sys.stderr)
                return 3
            time.sleep(0.02)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            print(f"child exited with {code}", file=sys.stderr)
            return code
        # The requests the child made reached the server, on connections of its own.
        assert server.stats.requests_by_path.get("/v1/embeddings") == 3, server.stats
        client.close()
    print("child ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
