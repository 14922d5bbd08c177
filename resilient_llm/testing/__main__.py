"""``python -m resilient_llm.testing``: the same as ``resilient-llm mock-server``."""

import sys

from ._cli import run_mock_server_cli

sys.exit(run_mock_server_cli())
