"""Streams (SPEC §9): retried until the first chunk, bounded by the deadline to the last, closed.

Opening a stream is one attempt of a call: the official stream is created *and its first chunk
read* inside the attempt, so a connection error, a 429/5xx or a stream that breaks before its
first chunk is retried like any other failure (:func:`open_first` / :func:`aopen_first`). After
the first chunk nothing is retried (that would repeat text): a failure is raised as
:class:`StreamInterrupted`, a deadline reached mid-stream as :class:`DeadlineExceeded`, both
carrying ``.chunks`` and ``.text``.

The deadline bounds the whole stream, the consumer's own time between chunks included; the read
timeout bounds each gap. The sync stream enforces it without threads (the transport checks the
deadline between socket reads, see :mod:`._http`); the async one with a cancel scope entered and
left in the same task, around each chunk. Breaking out, ``close()`` / ``aclose()``, leaving the
``with`` block or dropping the stream closes its connection; an async stream is closed on its
own event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel
import openai

from ._closing import AsyncClosing, Closing
from ._context import scoped
from ._exceptions import DeadlineExceeded, InvalidResponse, StreamInterrupted
from ._http import httpx
from ._messages import describe
from ._secrets import scrub

__all__ = [
    "AsyncResilientStream",
    "Opened",
    "ResilientStream",
    "aopen_first",
    "chunk_text",
    "open_first",
]

T = TypeVar("T")

# Closing tasks of dropped async streams: referenced until done (asyncio keeps weak refs only).
_closing: set[Any] = set()


def chunk_text(item: object) -> str:
    """The text a chunk adds: a chat chunk's delta, or a Responses ``output_text.delta`` event."""
    choices = getattr(item, "choices", None)
    if choices:
        content = getattr(getattr(choices[0], "delta", None), "content", None)
        return content if isinstance(content, str) else ""
    kind = getattr(item, "type", None)
    if isinstance(kind, str) and kind.endswith("output_text.delta"):
        delta = getattr(item, "delta", None)
        return delta if isinstance(delta, str) else ""
    return ""


@dataclass(frozen=True, slots=True)
class Opened:
    """An official stream whose first chunk arrived."""

    stream: Any
    first: Any


def _as_sdk_error(stream: Any, error: Exception) -> Exception:
    """openai 3 raises its own errors for a transport failure mid-stream; openai 2 lets the HTTP
    package's through. The same type either way, so that a stream that breaks before its first
    chunk is retried like any connection error."""
    request: Any = stream.response.request
    if isinstance(error, httpx.TimeoutException):
        return openai.APITimeoutError(request=request)
    if isinstance(error, httpx.TransportError):
        return openai.APIConnectionError(request=request)
    return error


def open_first(stream: Any) -> Opened:
    """Read the first chunk of an official sync stream, closing it if that fails."""
    try:
        first = next(stream)
    except StopIteration:
        stream.close()
        raise InvalidResponse("the stream ended before its first chunk") from None
    except Exception as error:
        stream.close()
        converted = _as_sdk_error(stream, error)
        if converted is error:
            raise
        raise converted from error
    except BaseException:
        stream.close()
        raise
    return Opened(stream, first)


async def aopen_first(stream: Any) -> Opened:
    """The async twin of :func:`open_first`."""
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        with anyio.CancelScope(shield=True):
            await stream.close()
        raise InvalidResponse("the stream ended before its first chunk") from None
    except Exception as error:
        with anyio.CancelScope(shield=True):
            await stream.close()
        converted = _as_sdk_error(stream, error)
        if converted is error:
            raise
        raise converted from error
    except BaseException:
        with anyio.CancelScope(shield=True):
            await stream.close()
        raise
    return Opened(stream, first)


def is_official_stream(value: object) -> bool:
    return isinstance(value, (openai.Stream, openai.AsyncStream))


class _StreamState:
    """What the sync and async streams share: counting, the text so far, and the errors."""

    def __init__(
        self,
        opened: Opened,
        *,
        operation: str,
        deadline: float | None,
        deadline_at: float | None,
        attempts: int,
        text_only: bool,
    ) -> None:
        self._stream = opened.stream
        self._pending: list[Any] = [opened.first]
        self._operation = operation
        self._deadline = deadline
        self._deadline_at = deadline_at
        self._attempts = attempts
        self._started = time.monotonic()
        self._text_only = text_only
        self._pieces: list[str] = []
        self._closed = False
        self._ended = False
        self.chunks = 0

    @property
    def text(self) -> str:
        """The text delivered so far."""
        return "".join(self._pieces)

    def _remaining(self) -> float | None:
        return None if self._deadline_at is None else self._deadline_at - time.monotonic()

    def _deliver(self, item: Any) -> tuple[bool, Any]:
        """Count ``item``; returns whether to hand it out, and what."""
        self.chunks += 1
        piece = chunk_text(item)
        if piece:
            self._pieces.append(piece)
        if self._text_only:
            return bool(piece), piece
        return True, item

    def _deadline_error(self, cause: BaseException | None) -> DeadlineExceeded:
        error = DeadlineExceeded(
            self._operation,
            deadline=self._deadline or 0.0,
            elapsed=time.monotonic() - self._started,
            attempts=self._attempts,
            reason="the stream was still running",
            chunks=self.chunks,
            text=self.text,
        )
        error.__cause__ = cause
        return error

    def _failure(self, error: BaseException) -> BaseException:
        """The error the consumer sees for ``error`` raised mid-stream."""
        remaining = self._remaining()
        if remaining is not None and remaining <= 0.01:
            return scrub(self._deadline_error(error))
        interrupted = StreamInterrupted(
            f"{self._operation}: the stream broke after {self.chunks} chunk"
            f"{'' if self.chunks == 1 else 's'}: {describe(error)}",
            chunks=self.chunks,
            text=self.text,
        )
        interrupted.__cause__ = error
        return scrub(interrupted)


class ResilientStream(_StreamState, Closing, Generic[T]):
    """A sync stream of official chunks (or of text deltas for ``complete``), as ``openai.Stream``
    behaves: an iterator and a context manager, with the guarantees of the module docstring.

    Attributes:
        chunks: how many chunks were delivered so far.
        text: the text delivered so far.
    """

    def __init__(self, opened: Opened, *, on_end: Callable[..., None], **kwargs: Any) -> None:
        super().__init__(opened, **kwargs)
        self._on_end = on_end

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while True:
            if self._ended:
                raise StopIteration
            item = self._pending.pop() if self._pending else self._next_item()
            deliver, value = self._deliver(item)
            if deliver:
                return value  # type: ignore[no-any-return]

    def _next_item(self) -> Any:
        remaining = self._remaining()
        if remaining is not None and remaining <= 0:
            raise self._end(self._deadline_error(None))
        try:
            with scoped(deadline_at=self._deadline_at):
                return next(self._stream)
        except StopIteration:
            self._end(None)
            raise
        except Exception as error:
            raise self._end(self._failure(error)) from error

    def _end(self, error: BaseException | None) -> BaseException:
        """Close the stream and report its end; returns ``error`` for the caller to raise."""
        if not self._ended:
            self._ended = True
            if not self._closed:
                self._closed = True
                self._stream.close()
            self._on_end(error, self.chunks)
        return error or StopIteration()

    def close(self) -> None:
        """Close the connection (also when the stream was not read to the end)."""
        if not self._closed:
            self._closed = True
            self._stream.close()
        if not self._ended:
            self._ended = True
            self._on_end(None, self.chunks)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self._stream.close()


class AsyncResilientStream(_StreamState, AsyncClosing, Generic[T]):
    """The async twin of :class:`ResilientStream`: an async iterator and async context manager,
    as ``openai.AsyncStream`` behaves; closed on its own event loop.
    """

    def __init__(
        self, opened: Opened, *, on_end: Callable[..., Awaitable[None]], **kwargs: Any
    ) -> None:
        super().__init__(opened, **kwargs)
        self._on_end = on_end
        self._token = anyio.lowlevel.current_token().native_token

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            if self._ended:
                raise StopAsyncIteration
            if self._pending:
                item = self._pending.pop()
            else:
                item = await self._next_item()
            deliver, value = self._deliver(item)
            if deliver:
                return value  # type: ignore[no-any-return]

    async def _next_item(self) -> Any:
        remaining = self._remaining()
        if remaining is not None and remaining <= 0:
            raise await self._end(self._deadline_error(None))
        item: Any = _NOTHING
        try:
            deadline = float("inf") if remaining is None else anyio.current_time() + remaining
            with anyio.CancelScope(deadline=deadline):
                item = await self._stream.__anext__()
        except StopAsyncIteration:
            await self._end(None)
            raise
        except Exception as error:
            raise await self._end(self._failure(error)) from error
        if item is _NOTHING:
            raise await self._end(self._deadline_error(None))
        return item

    async def _end(self, error: BaseException | None) -> BaseException:
        """Close the stream (on this loop) and report its end; returns ``error`` to raise."""
        if not self._ended:
            self._ended = True
            if not self._closed:
                self._closed = True
                with anyio.CancelScope(shield=True):
                    await self._stream.close()
            await self._on_end(error, self.chunks)
        return error or StopAsyncIteration()

    async def aclose(self) -> None:
        """Close the connection, on this loop (also when the stream was not read to the end)."""
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await self._stream.close()
        if not self._ended:
            self._ended = True
            await self._on_end(None, self.chunks)

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        _close_on_its_loop(self._token, self._stream)


_NOTHING: Any = object()


def _close_on_its_loop(token: object, stream: Any) -> None:
    """Close a dropped async stream on the loop that opened it, if that loop still runs."""
    try:
        if isinstance(token, asyncio.AbstractEventLoop):
            if token.is_closed():
                return

            def spawn() -> None:
                task = token.create_task(stream.close())
                _closing.add(task)
                task.add_done_callback(_closing.discard)

            token.call_soon_threadsafe(spawn)
        else:
            import trio

            token.run_sync_soon(  # type: ignore[attr-defined]
                lambda: trio.lowlevel.spawn_system_task(stream.close)
            )
    except RuntimeError:  # the loop is gone: nothing can be awaited on it any more
        pass
