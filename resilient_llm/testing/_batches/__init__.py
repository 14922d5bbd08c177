"""OpenAI's Batch API (`/v1/files`, `/v1/batches`) emulated for the loopback server.

A batch runs every line of its input file through the server's own endpoint handlers
(`parse_request` / `respond`, plus the poison marker), so a vector from a batch equals the one the
live endpoint returns and a poisoned line fails with the same 400. Time is a clock the test moves
(`BatchEmulator.advance`); with the default durations of zero a batch is done the first time it
is looked at after its creation.

Shapes follow OpenAI's OpenAPI description (`OpenAIFile`, `DeleteFileResponse`,
`ListFilesResponse`, `Batch`, `ListBatchesResponse`, the batch request output lines); validation
follows what the Batch API does: a bad input file is accepted at creation and the batch then
``failed`` with `errors.data` (`invalid_json_line`, `duplicate_custom_id`, `url_mismatch`,
`model_mismatch`, `empty_file`, `too_many_tasks`, `token_limit_exceeded`).

No I/O here: the server calls `BatchEmulator.answer` with a parsed request and writes the reply.

Modules: `emulator` (what a test and the server call), `state` (what the emulator knows),
`records` (files, lines, batches, settings), `files` (``/v1/files``), `jobs` (``/v1/batches``),
`lifecycle` (the clock moving batches along), `lines` (an input file read and run), `replies`
(the HTTP answers they share).
"""

from .emulator import BatchEmulator
from .records import RUNNABLE_ENDPOINTS

__all__ = ["RUNNABLE_ENDPOINTS", "BatchEmulator"]
