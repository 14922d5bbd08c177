"""The clock's work: each batch moved along its timeline (validating, in progress, finalizing,
then completed, failed, expired or cancelled) up to the emulator's clock (no I/O)."""

from __future__ import annotations

import math

from .files import store_result
from .lines import abandon_unfinished, read_input, run_lines
from .records import TERMINAL, Batch
from .state import State

__all__ = ["tick"]


def tick(state: State) -> None:
    """Bring every batch up to the clock. Caller holds the lock."""
    now = state.now
    for batch in state.oldest_first():
        if batch.status not in TERMINAL:
            _advance_batch(state, batch, now)
    running = sum(b.status in ("in_progress", "finalizing") for b in state.batches.values())
    state.peak_in_progress = max(state.peak_in_progress, running)


def _advance_batch(state: State, batch: Batch, now: float) -> None:
    s = state.settings
    if batch.status == "validating":
        ready = batch.created_at + s.validating_seconds
        if now < ready:
            return
        _validate(state, batch, int(ready))
        if batch.status != "in_progress":
            return
    if batch.status == "in_progress":
        assert batch.in_progress_at is not None
        until = min(now, batch.expires_at)
        duration = s.processing_seconds + s.line_seconds * len(batch.lines)
        if duration > 0:
            share = (until - batch.in_progress_at) / duration
            target = min(len(batch.lines), math.floor(len(batch.lines) * share))
        else:
            target = len(batch.lines)
        fault = batch.fault
        if fault is not None and fault.kind in ("expire", "cancel"):
            target = min(target, fault.after_lines)
        run_lines(state, batch, target)
        if (
            fault is not None
            and fault.kind in ("expire", "cancel")
            and (batch.done >= min(fault.after_lines, len(batch.lines)))
        ):
            if fault.kind == "expire":
                _end(state, batch, "expired", int(now))
            else:
                batch.cancelling_at = int(now)
                _end(state, batch, "cancelled", int(now))
            return
        if batch.done < len(batch.lines):
            if now >= batch.expires_at:
                _end(state, batch, "expired", batch.expires_at)
            return
        batch.status = "finalizing"
        batch.finalizing_at = int(batch.in_progress_at + duration)
    if batch.status == "finalizing":
        assert batch.finalizing_at is not None
        if now >= batch.finalizing_at + s.finalizing_seconds:
            _end(state, batch, "completed", int(batch.finalizing_at + s.finalizing_seconds))
        return
    if batch.status == "cancelling":
        assert batch.cancelling_at is not None
        if now >= batch.cancelling_at + s.cancelling_seconds:
            _end(state, batch, "cancelled", int(batch.cancelling_at + s.cancelling_seconds))


def _validate(state: State, batch: Batch, at: int) -> None:
    file = state.files.get(batch.input_file_id)
    errors, lines, model = read_input(batch, file, state.settings)
    fault = batch.fault
    if not errors and fault is not None and fault.kind == "fail":
        errors = list(fault.errors)
    limit = state.settings.enqueued_token_limit
    if not errors and limit is not None and model is not None:
        enqueued = sum(
            sum(line.tokens for line in other.lines[other.done :])
            for other in state.batches.values()
            if other.status in ("in_progress", "finalizing") and other.model == model
        )
        if enqueued + sum(line.tokens for line in lines) > limit:
            errors = [
                {
                    "code": "token_limit_exceeded",
                    "message": (
                        f"Enqueued token limit reached for {model} in organization "
                        f"org-mock. Limit: {limit:,} enqueued tokens. Please try again "
                        "once some in_progress batches have been completed."
                    ),
                    "param": None,
                    "line": None,
                }
            ]
    if errors:
        batch.status = "failed"
        batch.failed_at = at
        batch.errors = errors
        return
    batch.lines = lines
    batch.model = model
    batch.status = "in_progress"
    batch.in_progress_at = at


def _end(state: State, batch: Batch, status: str, at: int) -> None:
    """End `batch` with `status` at time `at`: its results written to files, in random order
    if the settings say so."""
    if status in ("expired", "cancelled"):
        abandon_unfinished(state, batch, status)
    if state.settings.shuffle:
        state.rng.shuffle(batch.output)
        state.rng.shuffle(batch.errors_out)
    batch.output_file_id = store_result(state, f"{batch.id}_output.jsonl", batch.output)
    batch.error_file_id = store_result(state, f"{batch.id}_error.jsonl", batch.errors_out)
    batch.output, batch.errors_out = [], []
    batch.status = status
    setattr(batch, f"{status}_at", at)
