"""OpenAI Batch API jobs with the accounting of ``embed_batch``, resumable across crashes.

```python
from resilient_llm import ResilientClient
from resilient_llm.batch_api import BatchJob

with ResilientClient() as client:
    job = BatchJob.embeddings(client, texts, state="ingest.json", dimensions=256)
    result = job.run()  # hours later: every input a vector or an ItemFailure, exactly once
```

Submit now, collect later (from any process): ``job.submit()``, then
``BatchJob.open(client, "ingest.json").collect()`` (``None`` until the job is finished).
`AsyncBatchJob` is the twin for `AsyncResilientClient`.
"""

from ._async import AsyncBatchJob
from ._errors import BatchAPIUnsupported, BatchLineError
from ._options import BatchJobOptions
from ._progress import JobProgress
from ._sync import BatchJob

__all__ = [
    "AsyncBatchJob",
    "BatchAPIUnsupported",
    "BatchJob",
    "BatchJobOptions",
    "BatchLineError",
    "JobProgress",
]
