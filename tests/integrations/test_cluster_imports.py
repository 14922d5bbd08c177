"""The cluster integrations are optional: importing resilient_llm never imports ray or pandas."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = """
import importlib, sys
import resilient_llm, resilient_llm.integrations, resilient_llm.testing

loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("ray", "pandas"))
assert not loaded, f"imported with resilient_llm: {loaded}"

# Without them, each module says what to install.
sys.modules["ray"] = None
sys.modules["pandas"] = None
for module in ("pandas", "ray"):
    try:
        importlib.import_module(f"resilient_llm.integrations.{module}")
    except ImportError as exc:
        print(exc)
    else:
        raise AssertionError(f"resilient_llm.integrations.{module} imported without {module}")
"""


def test_ray_and_pandas_are_imported_only_by_their_modules() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "resilient_llm.integrations.pandas needs pandas: pip install 'resilient-llm[ray]' "
        "(or pip install pandas)",
        "resilient_llm.integrations.ray needs ray[data]: pip install 'resilient-llm[ray]'",
    ]
