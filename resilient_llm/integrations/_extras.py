"""The import guard of the integration modules: a missing extra says what to install."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["needs"]


@contextmanager
def needs(module: str, requirement: str, extra: str, *, also: str = "") -> Iterator[None]:
    """Turn an ``ImportError`` of the imports inside into one naming the extra to install.

    ``with needs(__name__, "pandas", "ray", also=" (or pip install pandas)"): import pandas``
    """
    try:
        yield
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"{module} needs {requirement}: pip install 'resilient-llm[{extra}]'{also}"
        ) from exc
