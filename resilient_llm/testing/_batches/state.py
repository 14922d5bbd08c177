"""What the Batch API emulation knows, shared by its parts (no I/O)."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .records import Batch, BatchFault, File, LineFaultKind, Settings

if TYPE_CHECKING:
    from .._faults import Fault
    from .._server import MockOpenAIServer

__all__ = ["State"]


@dataclass(eq=False)
class State:
    """The files, batches, scripted faults and clock of one emulator.

    Thread-safe through `lock`: the server's loop answers requests while a test advances the
    clock, scripts faults or reads the batches, and every part holds the lock while it works.
    """

    server: MockOpenAIServer
    poison: str | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    settings: Settings = field(default_factory=Settings)
    available: bool = True
    offset: float = 0.0
    files: dict[str, File] = field(default_factory=dict)
    batches: dict[str, Batch] = field(default_factory=dict)
    sequence: Iterator[int] = field(default_factory=itertools.count)
    numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    rng: random.Random = field(default_factory=lambda: random.Random("batches"))
    batch_faults: deque[BatchFault] = field(default_factory=deque)
    line_faults: dict[str, deque[tuple[LineFaultKind, int]]] = field(default_factory=dict)
    download_faults: deque[Fault] = field(default_factory=deque)
    peak_in_progress: int = 0

    @property
    def now(self) -> float:
        """Wall-clock time plus every advance of the clock."""
        return time.time() + self.offset

    def oldest_first(self) -> list[Batch]:
        """Every batch, in the order they were created."""
        return sorted(self.batches.values(), key=lambda b: b.sequence)
