"""``batch status|cancel|collect STATE``: a Batch API job made by ``embed``/``summarize --via
batch``, found by its state file.

``status`` prints the job's shards from its state file and the server's counts for the batches
still running; ``cancel`` cancels every batch and sends nothing more; ``collect`` waits for the
job and writes its outcomes as the command that made it does (:mod:`.batch`), from the job's
record alone: IN is not read. The server is ``--base-url``, else the one the job was made on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._client import ResilientClient
from ..batch_api._state import JobStore
from .batch import BatchRun
from .batch_make import open_job, read_record
from .batch_record import JobRecord, record_path_for
from .console import Console
from .io import failures_path_for
from .run import JobSettings, check_paths, make_client
from .status import EXIT_OK, UsageError, sigterm_as_interrupt

__all__ = ["cancel_job", "collect_job", "job_status", "server_of"]


def collect_job(
    state: Path,
    *,
    output: Path | None,
    failures: Path | None,
    base_url: str | None,
    deadline: float,
    wait: bool,
    progress: bool,
    verbose: int,
) -> int:
    """``batch collect STATE``: wait for the job (or look once) and write its outcomes.

    OUT, the failures file and the server default to the job's record; IN is not read.

    Raises:
        UsageError: no job there, or no record of its inputs.
    """
    if not state.exists():
        raise UsageError(f"no batch job state at {state}")
    record = read_record(state)
    if record is None:
        raise UsageError(
            f"{state} has no record of its inputs ({record_path_for(state).name}): it was not "
            "made by the command line; collect it with BatchJob.open() in Python"
        )
    out = output or Path(record.output)
    if failures is None:
        failures = failures_path_for(out) if output is not None else Path(record.failures)
    settings = JobSettings(
        kind=record.command,
        input=record.input,
        output=out,
        failures=failures,
        resume=True,
        base_url=server_of(record, base_url),
        model=record.model,
        concurrency=1,
        deadline=deadline,
        rpm=None,
        tpm=None,
        progress=progress,
        verbose=verbose,
        via="batch",
        state=state,
        wait=wait,
    )
    output, failures_path = check_paths(settings)
    client = make_client(settings)
    with client, sigterm_as_interrupt():
        run = BatchRun(settings, client, output, failures_path, state, None)
        return run.execute(None, None, record=record)


def job_status(state: Path, *, base_url: str | None, deadline: float) -> int:
    """``batch status STATE``: the job's shards from its state file, running batches from the
    server.

    Raises:
        UsageError: no job there.
    """
    record = read_record(state) if state.exists() else None
    client = _client_for(state, record, base_url, deadline)
    with client:
        job = open_job(client, state)
        shards = JobStore(state).load().shards
        progress = job.progress()
        lines = [f"batch job {job.id} ({job.kind}), state {state}"]
        if record is not None:
            lines.append(f"  {record.command}: {record.input} → {record.output}")
        flags = " (cancelled)" if progress.cancelled else ""
        lines.append(
            f"  {progress.total:,} inputs: {progress.done:,} done ({progress.succeeded:,} "
            f"succeeded, {progress.failed:,} failed){flags}"
        )
        lines.append(
            f"  {'shard':>5} {'inputs':>8}  {'batch':<32} {'status':<12} "
            f"{'completed':>9} {'failed':>7} {'total':>7}"
        )
        for shard in shards:
            status = shard.batch_status or shard.stage
            counts = ("", "", "")
            if shard.stage == "collected":
                counts = (f"{shard.succeeded:,}", f"{shard.failed:,}", f"{shard.size:,}")
                status = f"{status}, collected" if shard.batch_status else "not sent"
            elif shard.batch_id is not None:
                batch = _retrieve(client, shard.batch_id)
                status = batch.status
                made = batch.request_counts
                if made is not None:
                    counts = (f"{made.completed:,}", f"{made.failed:,}", f"{made.total:,}")
            else:
                status = "not sent yet"
            lines.append(
                f"  {shard.shard:>5} {shard.size:>8,}  {shard.batch_id or '-':<32} "
                f"{status:<12} {counts[0]:>9} {counts[1]:>7} {counts[2]:>7}"
            )
        if progress.finished:
            lines.append(f"finished: collect the results with resilient-llm batch collect {state}")
        elif progress.cancelled:
            lines.append(
                "cancelled: its batches are stopping; collect what there is with "
                f"resilient-llm batch collect {state}"
            )
        else:
            lines.append(
                f"running: collect the results when it is done with resilient-llm batch collect "
                f"{state} (it waits), or run the job's command again"
            )
    print("\n".join(lines), flush=True)  # the command's output, on stdout
    return EXIT_OK


def cancel_job(state: Path, *, base_url: str | None, deadline: float) -> int:
    """``batch cancel STATE``: cancel every batch of the job; nothing more is sent.

    Raises:
        UsageError: no job there.
    """
    record = read_record(state) if state.exists() else None
    client = _client_for(state, record, base_url, deadline)
    console = Console()
    with client:
        job = open_job(client, state)
        before = job.progress()
        if before.finished and not before.cancelled:
            console.say(
                f"batch job {job.id} is finished: nothing to cancel; collect its results with "
                f"resilient-llm batch collect {state}"
            )
            return EXIT_OK
        progress = job.cancel()
    console.say(
        f"batch job {job.id} cancelled: nothing more is sent, and its running batches stop. "
        "Inputs that did not run become failures (never sent again); answers already in are "
        f"kept ({progress.total:,} inputs).\n"
        f"collect them: resilient-llm batch collect {state}"
    )
    return EXIT_OK


def _retrieve(client: ResilientClient, batch_id: str) -> Any:
    def batches_retrieve(official: Any) -> Any:
        return official.batches.retrieve(batch_id)

    return client.call(batches_retrieve)


def server_of(record: JobRecord | None, base_url: str | None) -> str | None:
    """The server of a job: ``--base-url``, else the one its record names (the batches live
    there), else ``$OPENAI_BASE_URL``."""
    if base_url:
        return base_url
    if record is not None:
        return record.base_url
    return os.environ.get("OPENAI_BASE_URL") or None


def _client_for(
    state: Path, record: JobRecord | None, base_url: str | None, deadline: float
) -> ResilientClient:
    if not state.exists():
        raise UsageError(f"no batch job state at {state}")
    settings = JobSettings(
        kind="batch",
        input=str(state),
        output=state,
        failures=None,
        resume=True,
        base_url=server_of(record, base_url),
        model=None,
        concurrency=1,
        deadline=deadline,
        rpm=None,
        tpm=None,
        progress=False,
        verbose=0,
    )
    return make_client(settings)
