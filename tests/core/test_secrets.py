"""Keys never leave: text, exception chains, notes, log records (SPEC §5)."""

from __future__ import annotations

import logging
import traceback

import pytest

from resilient_llm._call import add_note
from resilient_llm._secrets import format_exception, redact, register, scrub
from tests.sdk_objects import status_error

AZURE_KEY = "0123456789abcdef0123456789abcdef"  # not in sk- form


def test_registered_keys_of_any_format_are_masked() -> None:
    register(AZURE_KEY)
    register("short")  # a placeholder, not a secret
    assert redact(f"key={AZURE_KEY}; other=short") == "key=***; other=short"
    assert "sk-proj-ABCDEFGH1234" not in redact("sk-proj-ABCDEFGH1234")
    assert redact("Authorization: Bearer abcdefghijklmnop") == "Authorization: Bearer ***"


def test_scrub_walks_the_whole_chain() -> None:
    register(AZURE_KEY)
    echoed = status_error(
        429, body={"error": {"message": f"slow down, Bearer {AZURE_KEY}", "type": "requests"}}
    )
    add_note(echoed, f"a note naming {AZURE_KEY}")
    try:
        try:
            raise echoed
        except Exception as inner:
            raise RuntimeError(f"outer with {AZURE_KEY}") from inner
    except RuntimeError as outer:
        caught = outer
    scrub(caught)
    text = "".join(traceback.format_exception(caught))
    assert AZURE_KEY not in text
    assert AZURE_KEY not in str(echoed.body)
    assert AZURE_KEY not in echoed.message
    assert "***" in text


def test_log_records_are_masked_with_their_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    register(AZURE_KEY)
    caplog.set_level(logging.DEBUG, logger="resilient_llm")
    logger = logging.getLogger("resilient_llm")
    try:
        raise ValueError(f"server said {AZURE_KEY}")
    except ValueError:
        logger.exception("failed with %s", AZURE_KEY)
    assert AZURE_KEY not in caplog.text
    assert "server said ***" in caplog.text
    assert "Traceback" in caplog.text


def test_format_exception_masks() -> None:
    register(AZURE_KEY)
    assert AZURE_KEY not in format_exception(ValueError(AZURE_KEY))
