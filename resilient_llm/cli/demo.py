"""``resilient-llm demo``: batches against the embedded server with faults switched on.

A new user sees the library cope with rate limits, server errors, a reset, a hung request and a
poisoned input, with no API key and no network, and the accounting checked against what the
server injected.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, TYPE_CHECKING

from .._client import ResilientClient
from .._config import RetryPolicy, Timeouts
from .._exceptions import DeadlineExceeded
from .._messages import one_line, seconds
from .._records import RetryDetails
from .console import Console, route_logs
from .status import EXIT_OK, EXIT_STOPPED

if TYPE_CHECKING:
    from ..testing import MockOpenAIServer

__all__ = ["run_demo"]

_DEMO_TEXTS = 300
_DEMO_BATCH = 20
_DEMO_POISON = 137
_DEMO_READ_TIMEOUT = 1.0
_DEMO_DEADLINE = 1.5
_TOPICS = (
    "invoice",
    "support ticket",
    "release note",
    "meeting summary",
    "product review",
    "incident report",
)


def _demo_texts() -> list[str]:
    texts = [
        f"Document {i}: a short {_TOPICS[i % len(_TOPICS)]} about item {i * 7 % 101}, "
        f"written for the resilient_llm demo."
        for i in range(_DEMO_TEXTS)
    ]
    texts[_DEMO_POISON] = "Document 137 carries the POISON marker, which the server rejects."
    return texts


def _describe_retry(details: RetryDetails) -> str:
    headers = getattr(getattr(details.error, "response", None), "headers", None) or {}
    asked = next(
        (
            f"{name}: {headers[name]}"
            for name in ("retry-after-ms", "retry-after")
            if name in headers
        ),
        None,
    )
    if details.status == 429:
        what = "HTTP 429 rate limit"
    elif details.status is not None:
        what = f"HTTP {details.status} {details.error_type}"
    elif details.error_type == "APITimeoutError":
        what = f"no answer within the {_DEMO_READ_TIMEOUT:g} s read timeout (a hung request)"
    else:
        what = f"{details.error_type} (connection reset)"
    wait = (
        f"waited {seconds(details.sleep)} as the server asked ({asked})"
        if asked
        else f"backed off {seconds(details.sleep)}"
    )
    return f"{details.operation} attempt {details.attempt}: {what} -> {wait}, retried"


_NOTES = (
    "The Q3 planning meeting agreed to ship the importer in October and to hire two support "
    "engineers before the holiday peak.",
    "Customer reports that exports time out for files over 2 GB; the workaround is to split "
    "the export by month until the fix is released.",
    "Release 4.2 adds single sign-on, fixes the calendar sync bug, and drops support for the "
    "legacy v1 API.",
    "The incident on Tuesday was caused by an expired certificate on the EU gateway; renewal "
    "is now automated.",
    "Survey results: users like the new dashboard but find the export settings hard to discover.",
)


class _Demo:
    """The three acts of ``resilient-llm demo``, and the check that the accounting adds up."""

    def __init__(self, server: MockOpenAIServer, out: IO[str]) -> None:
        self.server = server
        self.out = out
        self.problems: list[str] = []
        self._retries: list[RetryDetails] = []
        self._lock = threading.Lock()

    def on_retry(self, details: RetryDetails) -> None:
        with self._lock:
            self._retries.append(details)

    def take_retries(self) -> list[RetryDetails]:
        with self._lock:
            taken, self._retries = self._retries, []
        return taken

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def check(self, condition: bool, what: str) -> None:
        if not condition:
            self.problems.append(what)

    def embed(self, client: ResilientClient) -> None:
        from ..testing import Fault

        faults = [
            Fault.status(429, retry_after=1),
            Fault.status(500),
            Fault.reset(),
            Fault.status(429, retry_after_ms=250),
            Fault.hang(),
            Fault.status(503),
        ]
        self.server.script(*faults, path="/v1/embeddings")
        self.say(
            f"1. Embedding {_DEMO_TEXTS} texts, {_DEMO_BATCH} per request, at most 8 requests at "
            "a time.\n"
            "   Injected: 2 x HTTP 429 (Retry-After: 1 and retry-after-ms: 250), 1 x 500, "
            "1 x 503,\n"
            f"   1 connection reset, 1 request that never answers; and text #{_DEMO_POISON} "
            'contains "POISON",\n'
            "   which the server rejects with HTTP 400."
        )
        result = client.embed_batch(_demo_texts(), batch_size=_DEMO_BATCH)
        retried = self.take_retries()
        self.say(f"   Retried and recovered ({len(retried)}):")
        for details in sorted(retried, key=lambda d: (d.status or 0, d.error_type)):
            self.say(f"     - {_describe_retry(details)}")
        stats = result.stats
        self.say(f"   Failed ({stats.failed}):")
        for failure in result.failures:
            what = one_line(failure.error_type, failure.message, status=failure.status, limit=90)
            self.say(f"     - item {failure.index}: {what}\n       input: {failure.preview!r}")
        if stats.bisections:
            self.say(
                f"     The request holding item {_DEMO_POISON} was split in halves "
                f"{stats.bisections} times to isolate it;\n"
                f"     the other {_DEMO_BATCH - 1} texts of that request were embedded."
            )
        self.say(
            f"   Accounting: {stats.succeeded} embedded + {stats.failed} failed = {stats.total} "
            "inputs, each exactly once;\n"
            f"   {stats.requests} requests, {stats.retries} retries ({stats.rate_limited} "
            f"rate-limited, {stats.timeouts} timed out), {seconds(stats.elapsed)}.\n"
        )
        self.check(stats.total == _DEMO_TEXTS, f"embed: {stats.total} inputs counted")
        self.check(
            [(f.index, f.status) for f in result.failures] == [(_DEMO_POISON, 400)],
            "embed: the poisoned text should be the only failure, with HTTP 400",
        )
        self.check(
            all(v is not None for i, v in enumerate(result.values) if i != _DEMO_POISON),
            "embed: every other text should have a vector",
        )
        expected = (len(faults), 2, 1)
        got = (stats.retries, stats.rate_limited, stats.timeouts)
        self.check(got == expected, f"embed: (retries, 429s, timeouts) {got}, not {expected}")

    def summarize(self, client: ResilientClient) -> None:
        from ..testing import Fault

        faults = [Fault.status(503, retry_after_ms=200), Fault.status(502)]
        self.server.script(*faults, path="/v1/chat/completions")
        self.say(
            f"2. Summarising {len(_NOTES)} texts, one chat completion each. Injected: "
            "1 x 503 (retry-after-ms: 200), 1 x 502."
        )
        result = client.summarize_batch(_NOTES, max_words=20)
        for details in self.take_retries():
            self.say(f"     - {_describe_retry(details)}")
        for index, summary in result.succeeded():
            self.say(f"     [{index}] {summary[:88]}")
        stats = result.stats
        self.say(
            f"   Accounting: {stats.succeeded} summarised + {stats.failed} failed = "
            f"{stats.total}; {stats.retries} retries, {seconds(stats.elapsed)}.\n"
        )
        self.check(result.ok and stats.total == len(_NOTES), "summarize: every text summarised")
        self.check(stats.retries == len(faults), f"summarize: {stats.retries} retries")

    def deadline(self, client: ResilientClient) -> None:
        from ..testing import Fault

        self.server.script(*[Fault.hang()] * 5, path="/v1/embeddings")
        self.say(
            "3. One embedding call to a server that never answers, with "
            f"deadline={_DEMO_DEADLINE:g} (seconds, retries included)."
        )
        started = time.monotonic()
        try:
            client.embed("does anybody hear me?", deadline=_DEMO_DEADLINE)
        except DeadlineExceeded as exc:
            took = time.monotonic() - started
            self.say(
                f"   DeadlineExceeded after {seconds(took)}: {exc}\n"
                "   (the official client's defaults would wait up to 600 s per attempt, "
                "3 attempts.)\n"
            )
            self.check(took < _DEMO_DEADLINE + 1.0, f"deadline: the call took {took:.2f} s")
        else:
            self.check(False, "deadline: the hung call should have raised DeadlineExceeded")
        self.take_retries()
        self.server.clear_faults()

    def check_server(self) -> None:
        injected = self.server.stats.faults_injected
        expected = {"status_429": 2, "status_500": 1, "status_503": 2, "status_502": 1, "reset": 1}
        for name, count in expected.items():
            self.check(injected.get(name) == count, f"server: {name} x {injected.get(name)}")
        self.check(injected.get("hang", 0) >= 3, "server: hung requests")


def run_demo() -> int:
    """Run the demo; 0 when the accounting matches the faults that were injected."""
    from ..testing import MockOpenAIServer

    started = time.monotonic()
    with route_logs(Console(), 0), MockOpenAIServer(latency=(0.002, 0.01), seed=5) as server:
        demo = _Demo(server, sys.stdout)
        client = ResilientClient(
            api_key="sk-demo-no-key-needed",
            base_url=server.base_url,
            timeouts=Timeouts(connect=2.0, read=_DEMO_READ_TIMEOUT, write=2.0, pool=2.0),
            deadline=10.0,
            retry=RetryPolicy(max_attempts=5, base_delay=0.05, max_delay=0.5),
            on_retry=demo.on_retry,
        )
        with client:
            demo.say(
                "resilient-llm demo: no API key, no network. A local OpenAI-compatible server\n"
                f"({server.base_url}) fails on purpose; the library has to cope.\n"
            )
            demo.embed(client)
            demo.summarize(client)
            demo.deadline(client)
        demo.check_server()
    if demo.problems:
        demo.say("The accounting does NOT match what was injected:")
        for problem in demo.problems:
            demo.say(f"  - {problem}")
        return EXIT_STOPPED
    demo.say(
        "Every input is accounted for and the only failure is the one injected "
        f"({time.monotonic() - started:.1f} s in all).\n"
        "Next: export OPENAI_API_KEY=... and run\n"
        "  resilient-llm embed docs.jsonl -o vectors.jsonl     "
        '(lines {"id": ..., "text": ...} or plain text)'
    )
    return EXIT_OK
