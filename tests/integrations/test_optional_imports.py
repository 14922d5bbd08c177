"""The adapters are optional: importing resilient_llm never imports LangChain or LlamaIndex."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# One fresh interpreter (importing openai takes a second or two) checks both promises.
SCRIPT = """
import importlib, sys
import resilient_llm, resilient_llm.integrations, resilient_llm.testing

frameworks = ("langchain", "langchain_core", "langchain_tests", "llama_index")
loaded = sorted(name for name in sys.modules if name.split(".")[0] in frameworks)
assert not loaded, f"imported with resilient_llm: {loaded}"

# Without the extras installed, the adapters say which extra to install.
for module, framework in (("langchain", "langchain_core"), ("llama_index", "llama_index")):
    sys.modules[framework] = None
    try:
        importlib.import_module(f"resilient_llm.integrations.{module}")
    except ImportError as exc:
        print(exc)
    else:
        raise AssertionError(f"{module} imported without {framework}")
"""


def test_frameworks_are_imported_only_by_their_adapter() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "resilient_llm.integrations.langchain needs langchain-core: "
        "pip install 'resilient-llm[langchain]'",
        "resilient_llm.integrations.llama_index needs llama-index-core: "
        "pip install 'resilient-llm[llama-index]'",
    ]
