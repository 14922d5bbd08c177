"""Token counting: exact with tiktoken when its files are at hand, a safe over-estimate otherwise.

Counts decide how inputs are grouped into requests (at most 300,000 tokens each) and whether an
input is over the model's per-input limit (8,191 tokens for the embedding models). Two counters
implement :class:`TokenCounter`:

- :class:`TiktokenCounter` wraps a ``tiktoken`` encoding: exact.
- :class:`EstimatingCounter` needs nothing and *over*-estimates, so a batch planned with it never
  crosses the API's limits; it is what :func:`get_token_counter` returns when tiktoken is not
  installed, when its encoding file is not in tiktoken's cache (tiktoken would download it with no
  timeout: we never let it try), or when ``RESILIENT_LLM_TOKENIZER=estimate`` is set.

Nothing here does network I/O.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ._estimate import EstimatingCounter, check_max_tokens

if TYPE_CHECKING:
    import tiktoken  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "ENCODING_FILES",
    "EstimatingCounter",
    "TiktokenCounter",
    "TokenCounter",
    "encoding_for_model",
    "get_token_counter",
    "tiktoken_cache_path",
]

logger = logging.getLogger("resilient_llm")

TOKENIZER_ENV = "RESILIENT_LLM_TOKENIZER"

# Download URL and sha256 of each encoding, as in tiktoken_ext/openai_public.py. tiktoken caches a
# download under sha1(url); the hash lets us reject a corrupt cached file, which tiktoken would
# otherwise delete and re-download (with no timeout).
ENCODING_FILES: dict[str, tuple[str, str]] = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}

_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4")


@runtime_checkable
class TokenCounter(Protocol):
    """What the batch planner needs from a tokenizer.

    Attributes:
        name: the encoding (``"cl100k_base"``) or ``"estimate(<encoding>)"``.
        exact: ``True`` when counts are the model's own, ``False`` for an over-estimate.
    """

    @property
    def name(self) -> str: ...

    @property
    def exact(self) -> bool: ...

    def count(self, text: str) -> int:
        """Number of tokens in ``text`` (special tokens are counted as plain text)."""
        ...

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """``[count(t) for t in texts]``, possibly faster."""
        ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` found whose count is ``<= max_tokens``."""
        ...


class TiktokenCounter:
    """Exact counts from a ``tiktoken`` encoding.

    Args:
        encoding: a loaded ``tiktoken.Encoding``.
    """

    exact = True

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding
        self.name: str = encoding.name

    def __repr__(self) -> str:
        return f"TiktokenCounter({self.name!r})"

    def count(self, text: str) -> int:
        """Number of tokens in ``text``."""
        return len(self._encoding.encode_ordinary(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Counts of several texts; tiktoken encodes them in parallel (it releases the GIL)."""
        if len(texts) < 2:
            return [self.count(text) for text in texts]
        encoded = self._encoding.encode_ordinary_batch(list(texts), num_threads=min(8, len(texts)))
        return [len(tokens) for tokens in encoded]

    def truncate(self, text: str, max_tokens: int) -> str:
        """Cut ``text`` to at most ``max_tokens`` tokens, on a character boundary.

        Raises:
            ValueError: ``max_tokens`` is negative.
        """
        check_max_tokens(max_tokens)
        tokens = self._encoding.encode_ordinary(text)
        if len(tokens) <= max_tokens:
            return text
        keep = max_tokens
        while True:
            # A cut inside a multi-byte character leaves a partial sequence at the end: drop it.
            head = self._encoding.decode_bytes(tokens[:keep]).decode("utf-8", errors="ignore")
            # Re-tokenising a prefix can merge differently than the original tokens did.
            excess = self.count(head) - max_tokens
            if excess <= 0:
                return head
            keep -= excess


# --- choosing a counter ----------------------------------------------------------------------


def encoding_for_model(model: str | None) -> str:
    """The tiktoken encoding name of an OpenAI model; ``cl100k_base`` when unknown.

    Fine-tuned (``ft:gpt-4o-mini:org::id``) and provider-prefixed (``openai/gpt-4o``) names map
    like their base model.
    """
    if not model:
        return "cl100k_base"
    name = model.strip().lower()
    if name.startswith("ft:"):
        name = name[3:]
    name = name.rsplit("/", 1)[-1]
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    return "cl100k_base"


def tiktoken_cache_path(encoding: str) -> str | None:
    """Where tiktoken caches ``encoding``'s file, or ``None`` if caching is off or it is unknown.

    Mirrors ``tiktoken.load.read_file_cached``: ``TIKTOKEN_CACHE_DIR``, else
    ``DATA_GYM_CACHE_DIR``, else ``<tempdir>/data-gym-cache``; the file is named by the sha1 of
    its download URL. An empty directory setting disables tiktoken's cache.
    """
    entry = ENCODING_FILES.get(encoding)
    if entry is None:
        return None
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":
        return None
    return os.path.join(cache_dir, hashlib.sha1(entry[0].encode()).hexdigest())


def _cached_file_problem(encoding: str, path: str | None) -> str | None:
    """Why tiktoken would need the network to load ``encoding``, or ``None`` if it would not."""
    if path is None:
        return f"no cached file for {encoding} (tiktoken cache disabled or unknown encoding)"
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        return f"{encoding} is not in tiktoken's cache ({path}: {exc.strerror or exc})"
    if hashlib.sha256(data).hexdigest() != ENCODING_FILES[encoding][1]:
        return f"the cached file of {encoding} is corrupt ({path})"
    return None


def _load_tiktoken(encoding: str, path: str | None) -> TokenCounter:
    try:
        import tiktoken  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return _fallback(encoding, "tiktoken is not installed")
    problem = _cached_file_problem(encoding, path)
    if problem is not None:
        return _fallback(encoding, problem)
    try:
        return TiktokenCounter(tiktoken.get_encoding(encoding))
    except Exception as exc:
        return _fallback(encoding, f"tiktoken failed to load {encoding}: {exc!r}")


def _fallback(encoding: str, reason: str) -> TokenCounter:
    logger.info(
        "resilient_llm: %s; token counts for %s are estimated (over-estimates). "
        "Install tiktoken and put its encoding files in TIKTOKEN_CACHE_DIR for exact counts.",
        reason,
        encoding,
    )
    return EstimatingCounter(encoding)


_cache_lock = threading.Lock()
_cache: dict[tuple[str, str | None, bool], TokenCounter] = {}


def get_token_counter(model: str | None = None) -> TokenCounter:
    """The token counter for ``model``, exact when possible; never touches the network.

    Counters are cached per encoding (and per tiktoken cache location, so pointing
    ``TIKTOKEN_CACHE_DIR`` elsewhere takes effect). The fallback to the estimate is logged once
    at INFO on the ``resilient_llm`` logger.

    Args:
        model: an OpenAI model name; ``None`` or unknown names use ``cl100k_base``.

    Raises:
        ValueError: ``RESILIENT_LLM_TOKENIZER`` is set to something other than ``auto``,
            ``tiktoken`` or ``estimate``.
    """
    encoding = encoding_for_model(model)
    mode = os.environ.get(TOKENIZER_ENV, "").strip().lower()
    if mode not in ("", "auto", "tiktoken", "estimate"):
        raise ValueError(f"{TOKENIZER_ENV} must be 'auto', 'tiktoken' or 'estimate', got {mode!r}")
    forced = mode == "estimate"
    path = None if forced else tiktoken_cache_path(encoding)
    key = (encoding, path, forced)
    with _cache_lock:
        counter = _cache.get(key)
        if counter is None:
            # Held while loading so that concurrent first calls load (and log) once.
            counter = EstimatingCounter(encoding) if forced else _load_tiktoken(encoding, path)
            _cache[key] = counter
        return counter


def _clear_cache() -> None:
    """Forget loaded counters (tests)."""
    with _cache_lock:
        _cache.clear()
