"""Run the reliability suite and write RELIABILITY.md.

    python -m tests.reliability --full          # full suite; writes RELIABILITY.md
    python -m tests.reliability                 # reduced suite (as CI); report only with -o
    python -m tests.reliability --full -o r.md -- -x   # arguments after -- go to pytest

The figures come from the tests themselves (see ``_report.py``); the exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pytest

from ._report import Collector, metadata, render

# As in conftest.py, which is not imported here: importing resilient_llm before pytest starts
# would keep pytest from rewriting its asserts (a warning, so an error under filterwarnings).
FULL_ENV = "RESILIENT_LLM_FULL"

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__)
    parser.add_argument("--full", action="store_true", help="run the slow, full-size scenarios")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="report file (default: RELIABILITY.md at the repository root with --full)",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    output = args.output or (ROOT / "RELIABILITY.md" if args.full else None)

    if args.full:
        os.environ[FULL_ENV] = "1"
    collector = Collector()
    command = "python -m tests.reliability" + (" --full" if args.full else "")
    started = time.monotonic()
    os.chdir(ROOT)
    code = pytest.main(
        [
            str(HERE.relative_to(ROOT)),
            "-q",
            *(["--run-slow"] if args.full else []),
            *args.pytest_args,
        ],
        plugins=[collector],
    )
    wall = time.monotonic() - started
    if output is not None and collector.tests:
        output.write_text(render(collector.tests, metadata(command, wall, collector.tests)))
        print(f"wrote {output} ({wall:.0f} s)", file=sys.stderr)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
