"""``resilient-llm mock-server``: run the loopback OpenAI server in the foreground."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import types
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "batch_settings",
    "parse_batch_setting",
    "parse_duration",
    "parse_latency",
    "run_mock_server_cli",
    "server_options",
]

_T = TypeVar("_T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")


def parse_duration(text: str) -> float:
    """Parse ``50ms``, ``0.05s`` or ``0.05`` (seconds) into seconds.

    Args:
        text: The duration.

    Returns:
        Seconds.

    Raises:
        ValueError: If `text` is not a duration.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (try 50ms, 0.05s or 0.05)")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def parse_latency(text: str) -> float | tuple[float, float]:
    """Parse a latency: a duration, or a range ``20ms-80ms`` for uniform random latency.

    Args:
        text: The latency.

    Returns:
        Seconds, or a ``(lo, hi)`` tuple of seconds.

    Raises:
        ValueError: If `text` is neither.
    """
    if "-" in text:
        lo_text, _, hi_text = text.partition("-")
        lo, hi = parse_duration(lo_text), parse_duration(hi_text)
        if lo > hi:
            raise ValueError(f"latency range {text!r} has lo > hi")
        return (lo, hi)
    return parse_duration(text)


def parse_batch_setting(text: str) -> tuple[str, float | int | bool | None]:
    """Parse ``NAME=VALUE``, a setting of ``BatchEmulator.configure``.

    Values are numbers, ``true``/``false`` (``shuffle``) or ``none`` (``enqueued_token_limit``);
    the emulator checks names and ranges when the server starts.

    Raises:
        ValueError: If `text` is not ``NAME=VALUE`` with such a value.
    """
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip().lower()
    if not sep or not name.isidentifier() or not raw:
        raise ValueError(f"expected NAME=VALUE (processing_seconds=30), got {text!r}")
    if raw in ("true", "false"):
        return name, raw == "true"
    if raw == "none":
        return name, None
    try:
        return name, int(raw)
    except ValueError:
        pass
    try:
        return name, float(raw)
    except ValueError:
        raise ValueError(f"{name}: not a number, true, false or none: {raw!r}") from None


def _argument(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """`parse` as an argparse ``type``: its `ValueError` becomes the usage error's message."""

    def convert(text: str) -> _T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilient-llm mock-server",
        description=(
            "Run an OpenAI-compatible server on loopback that injects faults, until Ctrl-C. "
            "Point a client at the printed base URL (any API key works unless --api-key is set)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4010, help="port, 0 for any (default: 4010)")
    parser.add_argument(
        "--latency",
        type=_argument(parse_latency),
        default=0.0,
        help="added to every request: 50ms, 0.05s, 0.05, or a range 20ms-80ms",
    )
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="probability of a random fault (0-1)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for latency and faults")
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute budget")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per minute budget")
    parser.add_argument(
        "--poison-marker",
        default="POISON",
        help="inputs containing this text get 400 (default: POISON; '' disables)",
    )
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    limits = parser.add_argument_group(
        "size limits", "a self-hosted server's limits, refused in that server's words"
    )
    limits.add_argument(
        "--max-inputs-per-request",
        type=_positive_int,
        default=None,
        metavar="N",
        help="embedding inputs accepted in one request",
    )
    limits.add_argument(
        "--max-request-bytes",
        type=_positive_int,
        default=None,
        metavar="N",
        help="largest request body accepted",
    )
    limits.add_argument(
        "--max-input-tokens",
        type=_positive_int,
        default=None,
        metavar="N",
        help="most tokens in one embedding input (the model's context)",
    )
    from ._limits import SIZE_LIMIT_STYLES

    limits.add_argument(
        "--size-limit-style",
        choices=SIZE_LIMIT_STYLES,
        default="openai",
        help="whose wording the refusals use (default: openai)",
    )
    parser.add_argument(
        "--echo-authorization",
        action="store_true",
        help="write the request's Authorization header into error messages, as leaky proxies do",
    )
    parser.add_argument(
        "--stream-chunk-interval",
        type=_argument(parse_duration),
        default=0.0,
        metavar="DURATION",
        help="pause before each chunk of a streamed answer: 50ms, 0.05s or 0.05",
    )
    batch = parser.add_argument_group("Batch API", "the emulated /v1/files and /v1/batches")
    batch.add_argument(
        "--batch",
        type=_argument(parse_batch_setting),
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the emulation, repeatable: processing_seconds=30 (each batch runs "
        "30 s of real time, its lines spread over it), advance_per_poll=600 (each look at a "
        "batch moves its clock 600 s), validating_seconds, finalizing_seconds, "
        "cancelling_seconds, line_seconds, max_lines, enqueued_token_limit, shuffle=false",
    )
    batch.add_argument(
        "--no-batch-api",
        action="store_true",
        help="answer /v1/files and /v1/batches with 404, as vLLM and Ollama do",
    )
    return parser


def batch_settings(argv: list[str] | None = None) -> tuple[dict[str, Any], bool]:
    """The Batch API emulation that ``mock-server`` arguments ask for.

    Args:
        argv: Arguments after ``mock-server``; None reads ``sys.argv[1:]``.

    Returns:
        The settings for ``server.batches.configure`` and whether the Batch API is served.
    """
    return _batch_settings(_build_parser().parse_args(argv))


def _batch_settings(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    return dict(args.batch), not args.no_batch_api


def server_options(argv: list[str] | None = None) -> dict[str, Any]:
    """The `MockOpenAIServer` keyword arguments that ``mock-server`` arguments ask for.

    Args:
        argv: Arguments after ``mock-server``; None reads ``sys.argv[1:]``.

    Returns:
        The keyword arguments, host and port included.
    """
    return _server_options(_build_parser().parse_args(argv))


def _server_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "host": args.host,
        "port": args.port,
        "latency": args.latency,
        "fail_rate": args.fail_rate,
        "seed": args.seed,
        "rpm": args.rpm,
        "tpm": args.tpm,
        "poison_marker": args.poison_marker or None,
        "api_key": args.api_key,
        "max_inputs_per_request": args.max_inputs_per_request,
        "max_request_bytes": args.max_request_bytes,
        "max_input_tokens": args.max_input_tokens,
        "size_limit_style": args.size_limit_style,
        "echo_authorization": args.echo_authorization,
        "stream_chunk_interval": args.stream_chunk_interval,
    }


def run_mock_server_cli(argv: list[str] | None = None) -> int:
    """Run the mock server in the foreground until Ctrl-C (SIGINT) or SIGTERM.

    Prints the base URL on the first line of stdout, and a summary of what was served on exit.

    Args:
        argv: Arguments after ``mock-server``; None reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 after a clean stop, 2 for bad arguments (argparse exits itself).
    """
    args = _build_parser().parse_args(argv)
    options = _server_options(args)
    batch, batch_api = _batch_settings(args)
    from ._server import MockOpenAIServer

    try:
        server = MockOpenAIServer(**options)
        server.batches.configure(**batch)
        server.batches.available = batch_api
        server.start()
    except (TypeError, ValueError, OSError) as exc:
        print(f"resilient-llm mock-server: {exc}", file=sys.stderr)  # noqa: T201
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous: dict[signal.Signals, Any] = {}
    if in_main_thread:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        print(server.base_url, flush=True)  # noqa: T201
        print(  # noqa: T201
            f"mock OpenAI server listening; try OPENAI_BASE_URL={server.base_url} "
            "OPENAI_API_KEY=sk-test. Ctrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    stats = server.stats
    by_status = ", ".join(f"{k}: {v}" for k, v in sorted(stats.responses_by_status.items()))
    print(  # noqa: T201
        f"served {stats.total_requests} requests ({by_status or 'none'}) on "
        f"{stats.connections_opened} connections; faults: {stats.faults_injected or 'none'}",
        file=sys.stderr,
        flush=True,
    )
    return 0
