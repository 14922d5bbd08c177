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
from ._policy import CallDetails, ClientStats, RetryDetails
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
    "InvalidInput",
    "ItemFailure",
    "ResilientClient",
    "ResilientLLMError",
    "RetryDetails",
    "RetryPolicy",
    "Timeouts",
    "__version__",
]
