"""The pytest plugin: fixtures, marker, and a light import."""

from __future__ import annotations

import http.client
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from resilient_llm.testing import MockOpenAIServer

ServerFactory = Callable[..., MockOpenAIServer]
_seen_ports: list[int] = []


def _get(server: MockOpenAIServer, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("run", [1, 2])
def test_mock_openai_is_fresh_for_each_test(mock_openai: MockOpenAIServer, run: int) -> None:
    assert mock_openai.running
    assert mock_openai.stats.total_requests == 0
    assert mock_openai.pending_faults() == 0
    assert _get(mock_openai, "/v1/models")[0] == 200
    assert mock_openai.stats.total_requests == 1
    _seen_ports.append(mock_openai.port)
    if run == 2:
        assert _seen_ports[0] != _seen_ports[1]  # a new server, not a shared one


@pytest.mark.mock_openai(latency=0.1, poison_marker="BAD")
def test_marker_configures_mock_openai(mock_openai: MockOpenAIServer) -> None:
    began = time.perf_counter()
    assert _get(mock_openai, "/v1/models")[0] == 200
    assert time.perf_counter() - began >= 0.1


def test_factory_servers_are_independent(mock_openai_factory: ServerFactory) -> None:
    strict = mock_openai_factory(api_key="sk-1")
    loose = mock_openai_factory()
    assert _get(strict, "/v1/models")[0] == 401
    assert _get(loose, "/v1/models")[0] == 200
    assert strict.port != loose.port


def test_plugin_in_a_fresh_pytest_run(tmp_path: Path) -> None:
    """End to end through the entry point: light import, fixtures, marker, teardown."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import http.client
            import sys

            import pytest

            from resilient_llm.testing import Fault

            # The plugin is loaded in every session: it must not import the server until used.
            SERVER_IMPORTED_EARLY = "resilient_llm.testing._server" in sys.modules
            servers = []

            def test_plugin_import_is_light():
                assert not SERVER_IMPORTED_EARLY

            @pytest.mark.mock_openai(rpm=1)
            def test_user_code(mock_openai, mock_openai_factory):
                other = mock_openai_factory(latency=0.01)
                servers.extend([mock_openai, other])
                mock_openai.script(Fault.status(503))
                conn = http.client.HTTPConnection("127.0.0.1", mock_openai.port)
                conn.request("GET", "/v1/models")
                assert conn.getresponse().status == 503
                conn.close()

            def test_servers_were_stopped():
                assert [s.running for s in servers] == [False, False]
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            # A user's session need not have pytest-asyncio; if installed, its unset-option
            # deprecation warning would become an error under -W error.
            "-p",
            "no:asyncio",
            "--strict-markers",
            "-W",
            "error",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
