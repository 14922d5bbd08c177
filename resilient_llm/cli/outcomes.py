"""Each outcome of a job put where it belongs: a result in OUT, a failure in the failures file.

The live job (:mod:`.job`) and the Batch API job (:mod:`.batch`) both record their outcomes here,
so that OUT, the failures file, the counts and the kinds of failure read the same whichever path
made them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .._batch.results import ItemFailure
from .._messages import one_line
from .console import Console, Reasons, Tally
from .io import JsonlWriter

__all__ = ["Outcomes", "failure_record"]


def failure_record(
    ident: object, line: int, failure: ItemFailure, *, not_sent: bool
) -> dict[str, object]:
    """One line of the failures file."""
    record: dict[str, object] = {
        "id": ident,
        "line": line,
        "error_type": failure.error_type,
        "message": failure.message,
        "status": failure.status,
        "attempts": failure.attempts,
    }
    if not_sent:
        record["not_sent"] = True
    return record


@dataclass(kw_only=True)
class Outcomes:
    """Writes results and failures, and counts them.

    Args:
        value_field: the key of a result's value (``embedding`` or ``summary``).
        results: OUT.
        failures: the failures file.
        tally: the run's counts.
        reasons: the first failure of each kind.
        console: where a failed input line is reported.
        verbose: ``-vv`` shows the traceback of the first failure of each kind.
    """

    value_field: str
    results: JsonlWriter
    failures: JsonlWriter
    tally: Tally
    reasons: Reasons
    console: Console
    verbose: int

    def succeeded(self, ident: object, value: object) -> None:
        """``{"id", value_field}`` in OUT.

        Raises:
            WriteFailed: OUT took no more (the line is not in it).
        """
        self.results.write({"id": ident, self.value_field: value})
        self.tally.succeeded += 1

    def failed(
        self, ident: object, line: int, failure: ItemFailure, *, report_unsent: bool = True
    ) -> None:
        """A line in the failures file; an input the library refused is also said on stderr.

        Args:
            ident: the input's id.
            line: its line in IN.
            failure: why it failed.
            report_unsent: say on stderr that an input never sent (``attempts == 0``) was
                refused: true of the library's input checks, not of a cancelled batch job.

        Raises:
            WriteFailed: the failures file took no more.
        """
        # Failed unsent with the error that ended the batch: nothing wrong with this input.
        not_sent = failure.not_sent
        self.failures.write(failure_record(ident, line, failure, not_sent=not_sent))
        self.tally.failed += 1
        if not_sent:
            self.tally.not_sent += 1
            return
        first_of_its_kind = self.reasons.add(failure, line, ident)
        if first_of_its_kind and self.verbose >= 2:
            where = f"line {line}, id {json.dumps(ident)}"
            self.console.say(
                f"the first {failure.error_type} ({where}):\n{failure.traceback.rstrip()}"
            )
        if failure.attempts == 0 and report_unsent:  # refused by the library's input checks
            text = one_line(failure.error_type, failure.message, status=failure.status)
            self.console.report_line(
                f"line {line} (id {json.dumps(ident)}): {text}; not sent", self.failures.path
            )
