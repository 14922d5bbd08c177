"""``resilient-llm mock-server`` (run here as ``python -m resilient_llm.testing``)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from resilient_llm.testing import MockOpenAIServer
from resilient_llm.testing._cli import parse_latency, run_mock_server_cli, server_options


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50ms", 0.05),
        ("0.05", 0.05),
        ("0.05s", 0.05),
        ("2", 2.0),
        (".5s", 0.5),
        ("20ms-80ms", (0.02, 0.08)),
        ("0.1-0.3", (0.1, 0.3)),
        ("10ms-0.5s", (0.01, 0.5)),
    ],
)
def test_parse_latency(text: str, expected: float | tuple[float, float]) -> None:
    assert parse_latency(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "fast", "5m", "-1", "80ms-20ms", "1-2-3"])
def test_parse_latency_rejects(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- the message varies by case
        parse_latency(text)


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_mock_server_cli(["--latency", "soon"])
    assert info.value.code == 2
    assert "not a duration" in capsys.readouterr().err


def test_port_in_use_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        code = run_mock_server_cli(["--port", str(blocker.getsockname()[1])])
    assert code == 1
    assert "resilient-llm mock-server:" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX-only")
def test_serves_until_ctrl_c_then_exits_0() -> None:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "resilient_llm.testing",
            "--port",
            "0",
            "--latency",
            "1ms-2ms",
            "--fail-rate",
            "0",
            "--seed",
            "1",
            "--rpm",
            "100",
            "--poison-marker",
            "XX",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/v1")
        port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        body = json.dumps({"input": "has XX inside", "model": "text-embedding-3-small"})
        conn.request("POST", "/v1/embeddings", body=body)
        assert conn.getresponse().status == 400  # the custom poison marker
        conn.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "served 1 requests (400: 1)" in err
    assert "Traceback" not in err


def test_new_options_reach_the_server() -> None:
    options = server_options(
        [
            "--max-inputs-per-request", "32",
            "--max-request-bytes", "2000000",
            "--max-input-tokens", "512",
            "--size-limit-style", "tei",
            "--echo-authorization",
            "--stream-chunk-interval", "50ms",
        ]
    )  # fmt: skip
    assert options["max_inputs_per_request"] == 32
    assert options["max_request_bytes"] == 2_000_000
    assert options["max_input_tokens"] == 512
    assert options["size_limit_style"] == "tei"
    assert options["echo_authorization"] is True
    assert options["stream_chunk_interval"] == pytest.approx(0.05)
    server = MockOpenAIServer(**{**options, "port": 0})  # every option is one the server takes
    with server:
        assert server.running
    defaults = server_options([])
    assert defaults["size_limit_style"] == "openai"
    assert (defaults["max_inputs_per_request"], defaults["echo_authorization"]) == (None, False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-inputs-per-request", "0"], "expected an integer >= 1"),
        (["--size-limit-style", "nginx"], "invalid choice"),
        (["--stream-chunk-interval", "soon"], "not a duration"),
    ],
)
def test_new_options_are_checked(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        server_options(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_style_without_that_limit_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_mock_server_cli(
        ["--port", "0", "--size-limit-style", "vllm", "--max-inputs-per-request", "8"]
    )
    assert code == 1
    assert "no counterpart in a 'vllm' server" in capsys.readouterr().err
