"""resilient_llm: safe-by-default calls to OpenAI and OpenAI-compatible servers.

Native per-attempt timeouts, a wall-clock deadline across retries, retries that honour
``Retry-After``, one official client per thread or event loop, and bounded batches in which every
input ends as a success or a recorded failure.
"""

from ._async_client import AsyncResilientClient
from ._batch.results import BatchResult, BatchStats, ItemFailure
from ._batch.streams import AsyncBatchStream, BatchStream
from ._client import ResilientClient
from ._config import (
    EmbedBatchOptions,
    MapOptions,
    RetryPolicy,
    SummarizeBatchOptions,
    Timeouts,
)
from ._exceptions import (
    BatchFailed,
    ClientClosedError,
    DeadlineExceeded,
    InvalidInput,
    InvalidResponse,
    ResilientLLMError,
    ServerUnreachable,
    StreamInterrupted,
)
from ._limits import FileRateLimiter, LocalRateLimiter, RateLimiter, RedisRateLimiter
from ._records import CallDetails, ClientStats, RetryDetails
from ._version import __version__
from .batch_api import AsyncBatchJob, BatchJob, BatchJobOptions

__all__ = [
    "AsyncBatchJob",
    "AsyncBatchStream",
    "AsyncResilientClient",
    "BatchFailed",
    "BatchJob",
    "BatchJobOptions",
    "BatchResult",
    "BatchStats",
    "BatchStream",
    "CallDetails",
    "ClientClosedError",
    "ClientStats",
    "DeadlineExceeded",
    "EmbedBatchOptions",
    "FileRateLimiter",
    "InvalidInput",
    "InvalidResponse",
    "ItemFailure",
    "LocalRateLimiter",
    "MapOptions",
    "RateLimiter",
    "RedisRateLimiter",
    "ResilientClient",
    "ResilientLLMError",
    "RetryDetails",
    "RetryPolicy",
    "ServerUnreachable",
    "StreamInterrupted",
    "SummarizeBatchOptions",
    "Timeouts",
    "__version__",
]
