"""The layout's one rule a test can see (STYLE.md): nothing below the facades imports them.

The facades are `_client` and `_async_client`; above them are only the package's front door
(`__init__`) and the optional layers that build clients for the user (`cli`, `integrations`).
Everything else, the batch core and the Batch API jobs included, must not import them, not
even under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import resilient_llm

PACKAGE = Path(resilient_llm.__file__).parent
FACADES = {"resilient_llm._client", "resilient_llm._async_client"}
ABOVE = ("__init__.py", "_client.py", "_async_client.py", "cli/", "integrations/")


def _imports(path: Path) -> set[str]:
    """The modules `path` imports, absolute (relative imports resolved)."""
    module = ".".join(("resilient_llm", *path.relative_to(PACKAGE).with_suffix("").parts))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            target = ".".join(part for part in (base, node.module or "") if part)
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def test_nothing_below_the_facades_imports_them() -> None:
    below = [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if not path.relative_to(PACKAGE).as_posix().startswith(ABOVE)
    ]
    assert len(below) > 50  # the walk found the package
    offenders = {
        path.relative_to(PACKAGE).as_posix(): sorted(_imports(path) & FACADES) for path in below
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_import_reader_sees_relative_imports_of_the_facades() -> None:
    """The check above can fail: a module two levels down importing a facade is seen."""
    path = PACKAGE / "batch_api" / "_sync.py"
    assert "resilient_llm._closing.Closing" in _imports(path)
    assert "resilient_llm._client.ResilientClient" in _imports(PACKAGE / "cli" / "run.py")
