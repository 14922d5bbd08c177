"""``python -m resilient_llm``: the same as the ``resilient-llm`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
