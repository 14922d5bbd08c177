"""The pure batch core and its two drivers.

::

    inputs ─▶ jobs.prepare (planning) ─▶ units ─▶ programs ─▶ calls ─▶ threads / tasks
                                                     │        (execute: from the facade)
                                                     ▼
                                  flow (BatchState) ─▶ accounting ─▶ results

``results`` holds the public records, ``accounting`` records each input exactly once,
``planning`` checks inputs and groups them into requests, ``bisection`` judges rejected requests,
``chunking`` splits long texts for map-reduce summaries, ``flow`` is the state a batch shares,
``programs`` are the per-unit generators that decide everything, ``jobs`` build them from the
options, ``threads`` and ``tasks`` drive them, and ``streams`` are what the facades return.
"""

from .results import BatchResult, BatchStats, ItemFailure

__all__ = ["BatchResult", "BatchStats", "ItemFailure"]
