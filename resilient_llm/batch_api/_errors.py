"""Errors of Batch API jobs (all under ``resilient_llm.ResilientLLMError``)."""

from __future__ import annotations

from .._exceptions import ResilientLLMError

__all__ = ["BatchAPIUnsupported", "BatchLineError"]


class BatchAPIUnsupported(ResilientLLMError):
    """The server has no Batch API (``/v1/files`` or ``/v1/batches`` answered 404 or 405).

    vLLM, Ollama and most proxies serve only the live endpoints: run the job with
    ``client.embed_batch(...)`` / ``client.summarize_batch(...)`` there instead.

    Attributes:
        base_url: the server's base URL.
        status: the HTTP status it answered.
    """

    def __init__(self, base_url: str, status: int, request: str) -> None:
        self.base_url = base_url
        self.status = status
        super().__init__(
            f"{base_url} has no Batch API ({request} answered HTTP {status}); servers such as "
            "vLLM and Ollama serve only the live endpoints: use client.embed_batch() or "
            "client.summarize_batch() there"
        )


class BatchLineError(ResilientLLMError):
    """A line the Batch API did not answer: its batch expired, was cancelled or failed.

    Attributes:
        code: ``batch_expired``, ``batch_cancelled``, ``cancelled_by_user``, ``no_answer``,
            or the code of the batch's error (``token_limit_exceeded``, ...).
    """

    def __init__(self, message: str, *, code: str) -> None:
        self.code = code
        super().__init__(message)
