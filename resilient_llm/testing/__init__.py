"""Testing kit: a real OpenAI-compatible HTTP server on loopback that injects faults.

```python
from resilient_llm.testing import Fault, MockOpenAIServer

with MockOpenAIServer(latency=0.01) as server:
    server.script(Fault.status(429, retry_after=0), Fault.reset(), path="/v1/embeddings")
    ...  # point any OpenAI client at server.base_url
    assert server.stats.faults_injected == {"status_429": 1, "reset": 1}
```

Besides status codes, latency, hangs, byte-at-a-time answers and resets, it injects answers
that break integrity (`Fault.embeddings`, `Fault.chat`, `Fault.error_in_body`), faults in
streams (`Fault.stall`, `Fault.slow_chunks`, `Fault.reset(after_chunks=)`), refuses requests for
their size in the words of real servers (``size_limit_style``), and records what it saw:
`ServerStats` counters and a `RequestRecord` per request (timestamps, tokens, size refusals,
a client that closed early), with `MockOpenAIServer.max_requests_in_window` for rate limits.

The pytest plugin (`resilient_llm.testing.pytest_plugin`, registered automatically) provides the
`mock_openai` and `mock_openai_factory` fixtures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._api import embedding_vector
    from ._chat import chat_reply_text
    from ._faults import Fault
    from ._server import MockOpenAIServer
    from ._stats import RequestRecord, ServerStats

__all__ = [
    "Fault",
    "MockOpenAIServer",
    "RequestRecord",
    "ServerStats",
    "chat_reply_text",
    "embedding_vector",
]

# Imported on first use: the pytest plugin imports this package in every test session, and most
# sessions never start a server.
_LOCATIONS = {
    "Fault": "._faults",
    "MockOpenAIServer": "._server",
    "RequestRecord": "._stats",
    "ServerStats": "._stats",
    "chat_reply_text": "._chat",
    "embedding_vector": "._api",
}


def __getattr__(name: str) -> Any:
    location = _LOCATIONS.get(name)
    if location is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(location, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
