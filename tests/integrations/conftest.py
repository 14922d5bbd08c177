"""The integration tests' rule for optional extras: skip without them, except in CI."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def require_extra(module: str, extra: str) -> ModuleType:
    """Import ``module`` for a test module, or skip that module when it is not installed.

    In CI (``CI`` set) a missing module fails instead: CI must never skip these tests silently.
    A CI lane that leaves an extra out on purpose names it in ``CI_SKIP_EXTRAS``
    (comma-separated, for example ``CI_SKIP_EXTRAS=ray``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f"{module} is not installed (pip install 'resilient-llm[{extra}]'): {exc}"
        allowed = {name.strip() for name in os.environ.get("CI_SKIP_EXTRAS", "").split(",")}
        if os.environ.get("CI") and extra not in allowed:
            pytest.fail(f"{reason}; CI is set, so these tests must run", pytrace=False)
        pytest.skip(reason, allow_module_level=True)
