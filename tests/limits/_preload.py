"""Imported by the forkserver alone: the worker processes it forks start warm.

A process's first embeddings call imports and builds the SDK's types and the test kit's server
(seconds, on a busy machine). Done once here, in the process every worker is forked from, it
costs nothing per worker. The warm-up server has stopped, and its thread ended, before any fork.
"""

from __future__ import annotations

import contextlib

from ._workers import warm_up

warm_up()
with contextlib.suppress(ImportError):
    import redis  # noqa: F401
