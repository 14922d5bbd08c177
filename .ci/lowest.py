"""Pin dependencies to the lowest versions pyproject.toml allows, for CI's `lowest` lane.

    python3.11 .ci/lowest.py constraints --skip dev,bench,ray   # name==lower_bound, one a line
    python3.11 .ci/lowest.py extras --skip dev,bench,ray        # the extras to install: a,b,c

Every runtime dependency and every requirement of the extras not skipped that declares a lower
bound (``>=X``) becomes ``name==X``. The resolver then fails loudly when a bound cannot be installed
beside the rest, and the test suite shows whether the library really works there. Tools (``dev``)
keep their newest releases unless they are also a runtime or extra requirement.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def lower_bounds(requirements: list[str]) -> dict[str, str]:
    """``{"openai": "2", ...}`` for each requirement with a ``>=`` specifier."""
    bounds: dict[str, str] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement.split(";", 1)[0])
        if match is None:
            sys.exit(f"lowest.py: cannot read requirement {requirement!r}")
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        for specifier in match.group(2).split(","):
            specifier = specifier.strip()
            if specifier.startswith(">="):
                version = specifier[2:].strip()
                if bounds.setdefault(name, version) != version:
                    sys.exit(f"lowest.py: {name} has two lower bounds: {bounds[name]}, {version}")
    return bounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["constraints", "extras"])
    parser.add_argument("--skip", default="", help="extras left out, comma-separated")
    args = parser.parse_args()
    with PYPROJECT.open("rb") as file:
        project = tomllib.load(file)["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    skip = {name for name in args.skip.split(",") if name}
    if unknown := skip - optional.keys():
        sys.exit(f"lowest.py: pyproject.toml has no extra {', '.join(sorted(unknown))}")
    extras = [name for name in optional if name not in skip]
    if args.what == "extras":
        sys.stdout.write(",".join(extras) + "\n")
        return
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += optional[extra]
    for name, version in sorted(lower_bounds(requirements).items()):
        sys.stdout.write(f"{name}=={version}\n")


if __name__ == "__main__":
    main()
