"""The integrations are optional: importing resilient_llm never imports LangChain, LlamaIndex,
Ray or pandas, and each integration says what to install when its framework is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

# One fresh interpreter per family (importing openai takes a second or two) checks both promises.
SCRIPT = """
import importlib, sys
import resilient_llm, resilient_llm.integrations, resilient_llm.testing

frameworks, modules = sys.argv[1].split(","), sys.argv[2].split(",")
loaded = sorted(name for name in sys.modules if name.split(".")[0] in frameworks)
assert not loaded, f"imported with resilient_llm: {loaded}"

# Without the frameworks installed, each integration says what to install.
for framework in frameworks:
    sys.modules[framework] = None
for module in modules:
    try:
        importlib.import_module(f"resilient_llm.integrations.{module}")
    except ImportError as exc:
        print(exc)
    else:
        raise AssertionError(f"resilient_llm.integrations.{module} imported without {frameworks}")
"""

FAMILIES = [
    pytest.param(
        ("langchain", "langchain_core", "langchain_tests", "llama_index"),
        ("langchain", "llama_index"),
        [
            "resilient_llm.integrations.langchain needs langchain-core: "
            "pip install 'resilient-llm[langchain]'",
            "resilient_llm.integrations.llama_index needs llama-index-core: "
            "pip install 'resilient-llm[llama-index]'",
        ],
        id="adapters",
    ),
    pytest.param(
        ("ray", "pandas"),
        ("pandas", "ray"),
        [
            "resilient_llm.integrations.pandas needs pandas: pip install 'resilient-llm[ray]' "
            "(or pip install pandas)",
            "resilient_llm.integrations.ray needs ray[data]: pip install 'resilient-llm[ray]'",
        ],
        id="cluster",
    ),
]


@pytest.mark.parametrize(("frameworks", "modules", "messages"), FAMILIES)
def test_frameworks_are_imported_only_by_their_integration(
    frameworks: tuple[str, ...], modules: tuple[str, ...], messages: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(frameworks), ",".join(modules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == messages
