"""Words for people: durations, and the one line that describes an error.

The library's own messages and the command line use these, so an error reads the same wherever it
is shown.
"""

from __future__ import annotations

__all__ = ["describe", "seconds"]


def seconds(value: float) -> str:
    """A duration rounded for people: ``1.5 s``, ``0.01 s``, ``30 s``, ``1,250 s``."""
    if value >= 1000:
        return f"{value:,.0f} s"
    if value >= 100:
        return f"{value:.0f} s"
    return f"{value:.3g} s" if value >= 0.001 else f"{value:.1g} s"


def describe(error: BaseException, *, limit: int = 300) -> str:
    """One line: the error's type, its HTTP status when it has one, and its message.

    Whitespace is collapsed and the message is cut at ``limit`` characters. API keys are masked.
    """
    from ._secrets import redact

    status = getattr(error, "status_code", None)
    status_text = (
        f" (HTTP {status})" if isinstance(status, int) and not isinstance(status, bool) else ""
    )
    message = " ".join(redact(str(error)).split())
    if len(message) > limit:
        message = message[: limit - 1] + "…"
    return f"{type(error).__name__}{status_text}: {message}" if message else type(error).__name__
