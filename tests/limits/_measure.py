"""What the server's request log says about a run's throughput.

The busiest window comes from the kit itself (`MockOpenAIServer.max_requests_in_window` and
`max_tokens_in_window`).
"""

from __future__ import annotations

from collections.abc import Sequence

from resilient_llm.testing import RequestRecord


def total_in(
    records: Sequence[RequestRecord], start: float, end: float, *, tokens: bool = False
) -> int:
    """Requests (or their prompt tokens) that arrived in ``[start, end)``."""
    return sum(r.prompt_tokens if tokens else 1 for r in records if start <= r.started < end)
