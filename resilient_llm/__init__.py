"""resilient_llm: safe-by-default calls to OpenAI and OpenAI-compatible servers.

Native per-attempt timeouts, a wall-clock deadline across retries, retries that honour
``Retry-After``, one official client per thread or event loop, and bounded batches in which every
input ends as a success or a recorded failure.
"""

from ._async_client import AsyncResilientClient
from ._batch import BatchResult, BatchStats, ItemFailure
from ._batch_async import AsyncBatchStream
from ._batch_sync import BatchStream
from ._client import ResilientClient
from ._config import RetryPolicy, Timeouts
from ._exceptions import (
    BatchFailed,
    ClientClosedError,
    DeadlineExceeded,
    InvalidInput,
    ResilientLLMError,
)
from ._limits import FileRateLimiter, LocalRateLimiter, RateLimiter, RedisRateLimiter
from ._policy import CallDetails, ClientStats, RetryDetails
from ._version import __version__

__all__ = [
    "AsyncBatchStream",
    "AsyncResilientClient",
    "BatchFailed",
    "BatchResult",
    "BatchStats",
    "BatchStream",
    "CallDetails",
    "ClientClosedError",
    "ClientStats",
    "DeadlineExceeded",
    "FileRateLimiter",
    "InvalidInput",
    "ItemFailure",
    "LocalRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "ResilientClient",
    "ResilientLLMError",
    "RetryDetails",
    "RetryPolicy",
    "Timeouts",
    "__version__",
]
