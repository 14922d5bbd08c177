"""What `BatchJob` and `AsyncBatchJob` share: making or reopening a job's state (no network)."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from .._exceptions import InvalidInput
from ._engine import JobEngine
from ._internals import summary_messages
from ._options import BatchJobOptions
from ._plan import (
    RequestKind,
    chat_kind,
    embeddings_kind,
    fingerprint,
    plan_shards,
    prompt_or_messages,
)
from ._state import JobState, JobStore

__all__ = [
    "JobCore",
    "StatePath",
    "chat_request",
    "embeddings_request",
    "summaries_request",
]

logger = logging.getLogger("resilient_llm")

#: Where a job's state file is.
StatePath = str | os.PathLike[str]


def _model(value: object, name: str = "model") -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _check_iterable(value: object, name: str) -> Iterable[object]:
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be an iterable of inputs, not {type(value).__name__}")
    return value


def embeddings_request(
    model: str, dimensions: int | None, params: Mapping[str, Any]
) -> RequestKind:
    """Checked arguments of an embeddings job."""
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        raise ValueError(f"dimensions must be an int >= 1, got {dimensions!r}")
    if "input" in params or "model" in params:
        raise TypeError("pass the inputs as texts and the model as model=")
    if params.get("encoding_format") not in (None, "base64", "float"):
        raise ValueError(f"encoding_format must be 'float' or 'base64', got {params!r}")
    extra = {k: v for k, v in params.items() if k != "encoding_format"}
    return embeddings_kind(_model(model), dimensions, extra)


def chat_request(model: str, system: str | None, params: Mapping[str, Any]) -> RequestKind:
    """Checked arguments of a chat job."""
    if params.get("stream"):
        raise ValueError("the Batch API cannot stream: leave stream= out")
    if "messages" in params or "model" in params:
        raise TypeError("pass the prompts as prompts and the model as model=")
    if system is not None and (not isinstance(system, str) or not system.strip()):
        raise TypeError("system must be a non-empty string or None")
    return chat_kind(_model(model), params, prompt_or_messages(system), {"system": system})


def summaries_request(model: str, instructions: str | None, max_words: int | None) -> RequestKind:
    """Checked arguments of a summaries job (the same messages as ``summarize``)."""
    summary_messages("check", instructions, max_words)  # bad options fail before any work

    def messages(item: object) -> Any:
        if not isinstance(item, str):
            raise InvalidInput(f"text is a {type(item).__name__}, not a str")
        try:
            return summary_messages(item, instructions, max_words)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(str(exc)) from exc

    request = {"instructions": instructions, "max_words": max_words}
    return chat_kind(_model(model), {}, messages, request)


def _differences(state: JobState, kind: RequestKind, digest: str, total: int) -> list[str]:
    found = []
    for name, old, new in (
        ("kind", state.kind, kind.kind),
        ("model", state.model, kind.model),
        ("request options", state.request, kind.request),
        ("number of inputs", state.total, total),
    ):
        if old != new:
            found.append(f"{name}: {old!r} in the state, {new!r} now")
    if not found and state.fingerprint != digest:
        found.append("the inputs differ (same number, other texts or order)")
    return found


class JobCore:
    """A job's state file, engine and options, made or reopened.

    Args:
        store: the job's files.
        state: its state as loaded.
        options: the options to run with.
    """

    def __init__(self, store: JobStore, state: JobState, options: BatchJobOptions) -> None:
        self.store = store
        self.job_id = state.job_id
        self.kind = state.kind
        self.total = state.total
        self.options = options
        self.engine = JobEngine(store, options.runtime())

    @classmethod
    def start(
        cls,
        kind: RequestKind,
        items: object,
        state_path: StatePath,
        options: BatchJobOptions | None,
    ) -> JobCore:
        """Plan a new job, or reopen the one `state_path` holds if it is the same job.

        Raises:
            ValueError: `state_path` holds another job (other inputs, model or options).
        """
        source = _check_iterable(items, "inputs")
        if options is not None and not isinstance(options, BatchJobOptions):
            raise TypeError(f"options must be BatchJobOptions, not {type(options).__name__}")
        store = JobStore(state_path)
        with store.locked():
            if store.exists():
                state = store.load()
                digest, total = fingerprint(source)
                differences = _differences(state, kind, digest, total)
                if differences:
                    raise ValueError(
                        f"{store.path} holds batch job {state.job_id} for other work ("
                        + "; ".join(differences)
                        + "); use another state path, or BatchJob.open() to go on with it"
                    )
                logger.info("batch job %s: resuming from %s", state.job_id, store.path)
                chosen = options or BatchJobOptions.from_state(state.limits, state.options)
                return cls(store, state, chosen)
            chosen = options or BatchJobOptions()
            limits = chosen.limits
            plan = plan_shards(source, kind, limits, store)
            state = JobState(
                job_id=f"rlj_{uuid.uuid4().hex}",
                kind=kind.kind,
                endpoint=kind.endpoint,
                model=kind.model,
                request=kind.request,
                fingerprint=plan.fingerprint,
                total=plan.total,
                created_at=time.time(),
                limits={
                    "max_lines": limits.max_lines,
                    "max_bytes": limits.max_bytes,
                    "max_inputs": limits.max_inputs,
                    "inputs_per_line": limits.inputs_per_line,
                },
                options=chosen.runtime(),
                rejected=plan.rejected,
                shards=plan.shards,
            )
            store.save(state)
            logger.info(
                "batch job %s: %d inputs in %d shards, state in %s",
                state.job_id,
                plan.total,
                len(plan.shards),
                store.path,
            )
            return cls(store, state, chosen)

    @classmethod
    def reopen(cls, state_path: StatePath, options: BatchJobOptions | None) -> JobCore:
        """Reopen the job `state_path` holds.

        Raises:
            FileNotFoundError: there is no such state file.
            ValueError: the file is not a job's state.
        """
        if options is not None and not isinstance(options, BatchJobOptions):
            raise TypeError(f"options must be BatchJobOptions, not {type(options).__name__}")
        store = JobStore(state_path)
        if not store.exists():
            raise FileNotFoundError(f"no batch job state at {store.path}")
        with store.locked():
            state = store.load()
        chosen = options or BatchJobOptions.from_state(state.limits, state.options)
        return cls(store, state, chosen)
