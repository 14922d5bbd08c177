"""Token counting: exact offline via tiktoken's cache, the over-estimating fallback, selection."""

from __future__ import annotations

import hashlib
import logging
import socket
import string
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_llm import _tokens
from resilient_llm._tokens import (
    EstimatingCounter,
    TiktokenCounter,
    TokenCounter,
    encoding_for_model,
    get_token_counter,
    tiktoken_cache_path,
)
from tests.conftest_tokens import (
    TIKTOKEN_FILES,
    build_tiktoken_cache,
    cache_file_name,
    corpus,
)

# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiktoken_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiktoken_cache(tmp_path_factory.mktemp("tiktoken-cache"))


@pytest.fixture(autouse=True)
def _fresh_counters(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("RESILIENT_LLM_TOKENIZER", raising=False)
    _tokens._clear_cache()
    yield
    _tokens._clear_cache()


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make any attempt to reach the network fail the test (and record it)."""
    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def fail(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{what}{args!r}")
            pytest.fail(f"network attempt: {what}{args!r}")

        return fail

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    try:
        import tiktoken.load
    except ImportError:
        pass
    else:
        monkeypatch.setattr(tiktoken.load, "read_file", refuse("tiktoken.load.read_file"))
    return attempts


@pytest.fixture
def offline_tiktoken(
    monkeypatch: pytest.MonkeyPatch, tiktoken_cache_dir: Path, network_attempts: list[str]
) -> Path:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache_dir))
    return tiktoken_cache_dir


@pytest.fixture(scope="session")
def real_encodings(tiktoken_cache_dir: Path) -> list[Any]:
    """Both real encodings, loaded once from the offline cache."""
    import tiktoken
    import tiktoken.load

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache_dir))

        def no_download(url: str) -> bytes:
            raise AssertionError(f"tiktoken tried to download {url}")

        patch.setattr(tiktoken.load, "read_file", no_download)
        return [tiktoken.get_encoding(name) for name in ("cl100k_base", "o200k_base")]


def real_count(encodings: list[Any], text: str) -> int:
    return max(len(encoding.encode_ordinary(text)) for encoding in encodings)


# --- the offline cache is what tiktoken itself expects -------------------------------------------


def test_cache_dir_layout_is_what_tiktoken_reads(offline_tiktoken: Path) -> None:
    """The fixture's file names are tiktoken's own cache keys: tiktoken loads with no network."""
    import tiktoken.load

    for url, sha256 in TIKTOKEN_FILES.values():
        data = tiktoken.load.read_file_cached(url, sha256)
        assert hashlib.sha256(data).hexdigest() == sha256


# --- model -> encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        (None, "cl100k_base"),
        ("", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-3-large", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo-2024-04-09", "cl100k_base"),
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("GPT-4o-mini", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("ft:gpt-4o-mini:acme::abc123", "o200k_base"),
        ("ft:gpt-3.5-turbo:acme::abc123", "cl100k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("nomic-embed-text", "cl100k_base"),
        ("my-azure-deployment", "cl100k_base"),
    ],
)
def test_encoding_for_model(model: str | None, encoding: str) -> None:
    assert encoding_for_model(model) == encoding


# --- choosing a counter --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "encoding"),
    [("text-embedding-3-small", "cl100k_base"), ("gpt-4o-mini", "o200k_base")],
)
def test_real_tiktoken_when_its_file_is_cached(
    offline_tiktoken: Path, network_attempts: list[str], model: str, encoding: str
) -> None:
    counter = get_token_counter(model)
    assert isinstance(counter, TiktokenCounter)
    assert counter.exact is True
    assert counter.name == encoding
    # Known counts of the real encodings.
    assert counter.count("hello world") == 2
    assert counter.count("") == 0
    assert network_attempts == []


def test_counters_are_cached_per_encoding(offline_tiktoken: Path) -> None:
    first = get_token_counter("text-embedding-3-small")
    assert get_token_counter("gpt-4") is first
    assert get_token_counter("gpt-4o") is not first
    assert get_token_counter("gpt-4o") is get_token_counter("o3-mini")


def test_fallback_without_download_when_file_not_cached(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    network_attempts: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("tiktoken")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    caplog.set_level(logging.INFO, logger="resilient_llm")
    counter = get_token_counter("text-embedding-3-small")
    assert isinstance(counter, EstimatingCounter)
    assert counter.exact is False
    assert network_attempts == []
    infos = [r for r in caplog.records if r.name == "resilient_llm" and r.levelno == logging.INFO]
    assert len(infos) == 1
    assert "estimate" in infos[0].getMessage()
    assert "not in tiktoken's cache" in infos[0].getMessage()
    # Logged once: later calls reuse the decision.
    assert get_token_counter("text-embedding-3-large") is counter
    infos = [r for r in caplog.records if r.name == "resilient_llm" and r.levelno == logging.INFO]
    assert len(infos) == 1


def test_fallback_when_default_cache_dir_is_empty(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, network_attempts: list[str]
) -> None:
    pytest.importorskip("tiktoken")
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    path = tiktoken_cache_path("cl100k_base")
    assert path is not None
    assert Path(path).parent == tmp_path / "data-gym-cache"
    assert isinstance(get_token_counter("gpt-4"), EstimatingCounter)
    assert network_attempts == []


def test_data_gym_cache_dir_is_honoured(
    monkeypatch: pytest.MonkeyPatch, tiktoken_cache_dir: Path, network_attempts: list[str]
) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tiktoken_cache_dir))
    assert isinstance(get_token_counter("gpt-4"), TiktokenCounter)


def test_cache_disabled_means_estimate(
    monkeypatch: pytest.MonkeyPatch, network_attempts: list[str]
) -> None:
    pytest.importorskip("tiktoken")
    # tiktoken downloads every time when its cache is disabled: never let it.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert tiktoken_cache_path("cl100k_base") is None
    assert isinstance(get_token_counter("gpt-4"), EstimatingCounter)
    assert network_attempts == []


def test_corrupt_cached_file_means_estimate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, network_attempts: list[str]
) -> None:
    pytest.importorskip("tiktoken")
    url = TIKTOKEN_FILES["cl100k_base"][0]
    (tmp_path / cache_file_name(url)).write_bytes(b"truncated download")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    # tiktoken would delete the file and re-download it; we must not let it try.
    assert isinstance(get_token_counter("gpt-4"), EstimatingCounter)
    assert network_attempts == []
    assert (tmp_path / cache_file_name(url)).exists()


def test_fallback_when_tiktoken_is_not_importable(
    monkeypatch: pytest.MonkeyPatch, offline_tiktoken: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    caplog.set_level(logging.INFO, logger="resilient_llm")
    counter = get_token_counter("gpt-4o")
    assert isinstance(counter, EstimatingCounter)
    assert counter.name == "estimate(o200k_base)"
    assert any("tiktoken is not installed" in r.getMessage() for r in caplog.records)


def test_fallback_when_tiktoken_fails_to_load(
    monkeypatch: pytest.MonkeyPatch, offline_tiktoken: Path
) -> None:
    import tiktoken

    def broken(name: str) -> Any:
        raise RuntimeError("plugin exploded")

    monkeypatch.setattr(tiktoken, "get_encoding", broken)
    assert isinstance(get_token_counter("gpt-4"), EstimatingCounter)


@pytest.mark.parametrize("value", ["estimate", "ESTIMATE", " estimate "])
def test_env_forces_the_estimate(
    monkeypatch: pytest.MonkeyPatch, offline_tiktoken: Path, value: str
) -> None:
    monkeypatch.setenv("RESILIENT_LLM_TOKENIZER", value)
    assert isinstance(get_token_counter("gpt-4"), EstimatingCounter)
    monkeypatch.setenv("RESILIENT_LLM_TOKENIZER", "auto")
    assert isinstance(get_token_counter("gpt-4"), TiktokenCounter)


def test_env_rejects_unknown_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESILIENT_LLM_TOKENIZER", "sentencepiece")
    with pytest.raises(ValueError, match="RESILIENT_LLM_TOKENIZER"):
        get_token_counter("gpt-4")


def test_both_counters_satisfy_the_protocol(offline_tiktoken: Path) -> None:
    assert isinstance(EstimatingCounter(), TokenCounter)
    assert isinstance(get_token_counter("gpt-4"), TokenCounter)


# --- TiktokenCounter -----------------------------------------------------------------------------


@pytest.fixture
def exact(offline_tiktoken: Path) -> TiktokenCounter:
    counter = get_token_counter("text-embedding-3-small")
    assert isinstance(counter, TiktokenCounter)
    return counter


def test_special_tokens_are_plain_text(exact: TiktokenCounter) -> None:
    # encode() would raise on a special token; user text must simply be counted.
    assert exact.count("<|endoftext|>") > 1


def test_count_many_matches_count(exact: TiktokenCounter) -> None:
    texts = [*list(corpus().values())[:12], "", "a"]
    assert exact.count_many(texts) == [exact.count(text) for text in texts]
    assert exact.count_many([]) == []
    assert exact.count_many(["hello world"]) == [2]


@pytest.mark.parametrize(
    "text",
    [
        "hello world, this is a sentence of several tokens",
        "人工智能是计算机科学的一个分支" * 10,
        "😀👨‍👩‍👧‍👦🏳️‍🌈" * 20,
        "x" * 1000,
        "  leading and trailing   ",
    ],
)
@pytest.mark.parametrize("limit", [0, 1, 2, 3, 7, 50])
def test_tiktoken_truncate(exact: TiktokenCounter, text: str, limit: int) -> None:
    cut = exact.truncate(text, limit)
    assert text.startswith(cut)
    assert exact.count(cut) <= limit
    if exact.count(text) <= limit:
        assert cut == text
    elif limit >= 7:
        assert cut  # only a partial character is ever given up
    cut.encode("utf-8")  # never half a character


def test_truncate_rejects_negative(exact: TiktokenCounter) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        exact.truncate("abc", -1)
    with pytest.raises(ValueError, match="max_tokens"):
        EstimatingCounter().truncate("abc", -1)


# --- EstimatingCounter ---------------------------------------------------------------------------

CORPUS = corpus()


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_estimate_is_never_below_the_real_count(real_encodings: list[Any], name: str) -> None:
    estimate = EstimatingCounter()
    text = CORPUS[name]
    samples = [text]
    samples += [text[i : i + 500] for i in range(0, len(text), 500)]
    samples += [text[i : i + 37] for i in range(0, min(len(text), 37 * 60), 37)]
    for sample in samples:
        assert estimate.count(sample) >= real_count(real_encodings, sample), sample[:60]


@pytest.mark.parametrize("name", ["english", "python", "json", "chinese", "russian", "emoji"])
def test_estimate_is_not_absurdly_high(real_encodings: list[Any], name: str) -> None:
    """An over-estimate of 3x would fail inputs the API accepts; natural text stays under 2.5x."""
    text = CORPUS[name]
    assert EstimatingCounter().count(text) <= 2.5 * real_count(real_encodings, text)


_WORDS = [
    "the",
    "Interoperability",
    "résumé",
    "naïve",
    "мир",
    "世界",
    "こんにちは",
    "안녕",
    "नमस्ते",
    "مرحبا",
    "שלום",
    "🙂",
    "👍🏽",
    "42",
    "3.14159",
    "0xDEADBEEF",
    "snake_case_name",
    "camelCaseName",
    "HTTPServer",
    "{'a': [1, 2]}",
    "#!/usr/bin/env",
    "...",
    "—",
    "\n",
    "\t",
    "    ",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(_WORDS), min_size=1, max_size=60),
    st.lists(st.sampled_from([" ", "", "\n", ", ", ". "]), min_size=1, max_size=60),
)
def test_estimate_over_mixed_text_property(
    real_encodings: list[Any], words: list[str], separators: list[str]
) -> None:
    text = "".join(w + separators[i % len(separators)] for i, w in enumerate(words))
    assert EstimatingCounter().count(text) >= real_count(real_encodings, text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(sorted(set(string.printable))), max_size=300))
def test_estimate_over_random_ascii_property(real_encodings: list[Any], text: str) -> None:
    assert EstimatingCounter().count(text) >= real_count(real_encodings, text)


@pytest.mark.parametrize(
    "text", ["a", "hello", "\ud800", "é", "😀", "a\ud800b", " ", "x" * 10, "中文", "🇫🇷"]
)
def test_estimate_never_exceeds_utf8_length(text: str) -> None:
    """A token is at least one byte: the UTF-8 length is a hard upper bound."""
    assert EstimatingCounter().count(text) <= len(text.encode("utf-8", "surrogatepass"))
    assert EstimatingCounter().count(text) >= 1


def test_estimate_of_empty_is_zero() -> None:
    assert EstimatingCounter().count("") == 0
    assert EstimatingCounter().count_many(["", "abc", ""]) == [
        0,
        EstimatingCounter().count("abc"),
        0,
    ]


@pytest.mark.parametrize("name", ["english", "chinese", "emoji", "base64", "whitespace"])
@pytest.mark.parametrize("limit", [0, 1, 5, 64, 1000])
def test_estimate_truncate(name: str, limit: int) -> None:
    counter = EstimatingCounter()
    text = CORPUS[name]
    cut = counter.truncate(text, limit)
    assert text.startswith(cut)
    assert counter.count(cut) <= limit
    if counter.count(text) > limit and limit >= 64:
        assert len(cut) > 0


def test_estimate_truncate_keeps_short_text_whole() -> None:
    counter = EstimatingCounter()
    assert counter.truncate("hello world", 100) == "hello world"


def test_estimate_truncate_of_huge_text_is_bounded_work() -> None:
    """A 2 MB input is cut in a handful of counts over small prefixes, not over 2 MB each."""
    counter = EstimatingCounter()
    counted: list[int] = []
    original = counter.count

    class Spy(EstimatingCounter):
        def count(self, text: str) -> int:
            counted.append(len(text))
            return original(text)

    spy = Spy()
    text = "word " * 400_000
    cut = spy.truncate(text, 8191)
    assert 0 < len(cut) < 200_000
    assert spy.count(cut) <= 8191
    # Only the first call (is it over?) reads the whole text.
    assert sum(counted) < len(text) + 40 * 200_000
