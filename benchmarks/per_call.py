"""Scenario 1: the cost of one call, against a server that answers at once.

``n`` sequential calls of each contender, repeated; the contenders take turns within each repeat
so that a slow moment of the machine hits them all alike. The bare ``http.client`` rows are the
floor: one keep-alive socket, ``json.loads`` and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from benchmarks._common import (
    API_KEY,
    CHAT_MESSAGES,
    CHAT_MODEL,
    EMBEDDING_MODEL,
    SHORT_TEXT,
    Settings,
    installed,
)

Factory = Callable[[str], tuple[Callable[[], Any], Callable[[], Any]]]


@dataclass(frozen=True)
class CallContender:
    key: str
    endpoint: str  # "embed" or "chat"
    label: str
    is_async: bool
    build: Factory
    requires: str | None = None


# -- sync ---------------------------------------------------------------------------------------


def _ours_sync(endpoint: str) -> Factory:
    def build(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
        from resilient_llm import ResilientClient

        client = ResilientClient(api_key=API_KEY, base_url=base_url)
        if endpoint == "embed":
            return (lambda: client.embed(SHORT_TEXT)), client.close
        return (lambda: client.chat(CHAT_MESSAGES)), client.close

    return build


def _raw_sync(endpoint: str) -> Factory:
    def build(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
        from openai import OpenAI

        client = OpenAI(api_key=API_KEY, base_url=base_url)
        if endpoint == "embed":

            def embed() -> Any:
                return client.embeddings.create(input=SHORT_TEXT, model=EMBEDDING_MODEL)

            return embed, client.close

        def chat() -> Any:
            return client.chat.completions.create(
                model=CHAT_MODEL,
                messages=CHAT_MESSAGES,  # type: ignore[arg-type]
            )

        return chat, client.close

    return build


def _bare(endpoint: str) -> Factory:
    def build(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
        parts = urlsplit(base_url)
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        if endpoint == "embed":
            path = parts.path + "/embeddings"
            body = json.dumps(
                {"input": SHORT_TEXT, "model": EMBEDDING_MODEL, "encoding_format": "base64"}
            ).encode()
        else:
            path = parts.path + "/chat/completions"
            body = json.dumps({"model": CHAT_MODEL, "messages": CHAT_MESSAGES}).encode()

        def call() -> Any:
            connection.request("POST", path, body=body, headers=headers)
            document = json.loads(connection.getresponse().read())
            if endpoint == "chat":
                return document["choices"][0]["message"]["content"]
            values = array("f")
            values.frombytes(base64.b64decode(document["data"][0]["embedding"]))
            return values.tolist()

        return call, connection.close

    return build


_HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def _decode_one(content: bytes) -> list[float]:
    document = json.loads(content)
    values = array("f")
    values.frombytes(base64.b64decode(document["data"][0]["embedding"]))
    return values.tolist()


def _embedding_body() -> bytes:
    return json.dumps(
        {"input": [SHORT_TEXT], "model": EMBEDDING_MODEL, "encoding_format": "base64"}
    ).encode()


def _http_only(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """openai's own HTTP client, no SDK around it: what an embedding call could cost."""
    import openai

    client = openai.DefaultHttpxClient()
    url, body = base_url + "/embeddings", _embedding_body()

    def call() -> Any:
        return _decode_one(client.post(url, content=body, headers=_HEADERS).content)

    return call, client.close


def _http_only_async(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import openai

    client = openai.DefaultAsyncHttpxClient()
    url, body = base_url + "/embeddings", _embedding_body()

    async def call() -> Any:
        response = await client.post(url, content=body, headers=_HEADERS)
        return _decode_one(response.content)

    return call, client.aclose


def _langchain_sync(endpoint: str) -> Factory:
    def build(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
        if endpoint == "embed":
            from langchain_openai import OpenAIEmbeddings

            embeddings = OpenAIEmbeddings(
                model=EMBEDDING_MODEL,
                base_url=base_url,
                api_key=API_KEY,
                check_embedding_ctx_length=False,
            )
            return (lambda: embeddings.embed_query(SHORT_TEXT)), lambda: None
        from langchain_openai import ChatOpenAI

        chat = ChatOpenAI(model=CHAT_MODEL, base_url=base_url, api_key=API_KEY)
        return (lambda: chat.invoke(CHAT_MESSAGES)), lambda: None

    return build


def _llamaindex_sync(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    from llama_index.embeddings.openai import OpenAIEmbedding

    model = OpenAIEmbedding(model=EMBEDDING_MODEL, api_key=API_KEY, api_base=base_url)
    return (lambda: model.get_text_embedding(SHORT_TEXT)), lambda: None


# -- async --------------------------------------------------------------------------------------


def _ours_async(endpoint: str) -> Factory:
    def build(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
        from resilient_llm import AsyncResilientClient

        client = AsyncResilientClient(api_key=API_KEY, base_url=base_url)
        if endpoint == "embed":
            return (lambda: client.embed(SHORT_TEXT)), client.aclose
        return (lambda: client.chat(CHAT_MESSAGES)), client.aclose

    return build


def _raw_async(endpoint: str) -> Factory:
    def build(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
        from openai import AsyncOpenAI

        client = AsyncOpenAI(api_key=API_KEY, base_url=base_url)
        if endpoint == "embed":
            return (
                lambda: client.embeddings.create(input=SHORT_TEXT, model=EMBEDDING_MODEL)
            ), client.close
        return (
            lambda: client.chat.completions.create(
                model=CHAT_MODEL,
                messages=CHAT_MESSAGES,  # type: ignore[arg-type]
            )
        ), client.close

    return build


def _langchain_async(endpoint: str) -> Factory:
    def build(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
        if endpoint == "embed":
            from langchain_openai import OpenAIEmbeddings

            embeddings = OpenAIEmbeddings(
                model=EMBEDDING_MODEL,
                base_url=base_url,
                api_key=API_KEY,
                check_embedding_ctx_length=False,
            )
            return (lambda: embeddings.aembed_query(SHORT_TEXT)), lambda: None
        from langchain_openai import ChatOpenAI

        chat = ChatOpenAI(model=CHAT_MODEL, base_url=base_url, api_key=API_KEY)
        return (lambda: chat.ainvoke(CHAT_MESSAGES)), lambda: None

    return build


def _llamaindex_async(base_url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    from llama_index.embeddings.openai import OpenAIEmbedding

    model = OpenAIEmbedding(model=EMBEDDING_MODEL, api_key=API_KEY, api_base=base_url)
    return (lambda: model.aget_text_embedding(SHORT_TEXT)), lambda: None


LC = "langchain_openai"
LI = "llama_index.embeddings.openai"

CONTENDERS: list[CallContender] = [
    CallContender("ours", "embed", "resilient_llm `embed`", False, _ours_sync("embed")),
    CallContender("raw", "embed", "raw `embeddings.create`", False, _raw_sync("embed")),
    CallContender("bare", "embed", "bare `http.client` + `json`", False, _bare("embed")),
    CallContender(
        "http-only", "embed", "openai's HTTP client, no SDK (reference)", False, _http_only
    ),
    CallContender(
        "langchain", "embed", "LangChain `embed_query`", False, _langchain_sync("embed"), LC
    ),
    CallContender(
        "llamaindex", "embed", "LlamaIndex `get_text_embedding`", False, _llamaindex_sync, LI
    ),
    CallContender("ours", "chat", "resilient_llm `chat`", False, _ours_sync("chat")),
    CallContender("raw", "chat", "raw `chat.completions.create`", False, _raw_sync("chat")),
    CallContender("bare", "chat", "bare `http.client` + `json`", False, _bare("chat")),
    CallContender(
        "langchain", "chat", "LangChain `ChatOpenAI.invoke`", False, _langchain_sync("chat"), LC
    ),
    CallContender("ours", "embed", "resilient_llm `embed`", True, _ours_async("embed")),
    CallContender("raw", "embed", "raw `embeddings.create`", True, _raw_async("embed")),
    CallContender(
        "http-only", "embed", "openai's HTTP client, no SDK (reference)", True, _http_only_async
    ),
    CallContender(
        "langchain", "embed", "LangChain `aembed_query`", True, _langchain_async("embed"), LC
    ),
    CallContender(
        "llamaindex", "embed", "LlamaIndex `aget_text_embedding`", True, _llamaindex_async, LI
    ),
    CallContender("ours", "chat", "resilient_llm `chat`", True, _ours_async("chat")),
    CallContender("raw", "chat", "raw `chat.completions.create`", True, _raw_async("chat")),
    CallContender(
        "langchain", "chat", "LangChain `ChatOpenAI.ainvoke`", True, _langchain_async("chat"), LC
    ),
]


def available(s: Settings) -> list[CallContender]:
    return [c for c in CONTENDERS if c.requires is None or (s.peers and installed(c.requires))]


def _time_sync(call: Callable[[], Any], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        call()
    return time.perf_counter() - started


async def _time_async(call: Callable[[], Any], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return time.perf_counter() - started


SLICES = 10  # each repeat is cut in slices, the contenders taking turns slice by slice


def _calls(c: CallContender, s: Settings) -> int:
    # Peers only set the scale: a quarter of the calls keeps the run short.
    return s.per_call_n if c.requires is None else max(1, s.per_call_n // 4)


def _slices(n: int) -> list[int]:
    count = min(SLICES, n)
    return [n // count + (1 if k < n % count else 0) for k in range(count)]


def run(base_url: str, s: Settings) -> list[dict[str, Any]]:
    """Time every available contender; return one row per contender with its seconds per call.

    Within a repeat the contenders take turns every tenth of their calls, so that a change in
    the machine's load during the run falls on all of them alike.
    """
    contenders = available(s)
    warmup = max(5, s.per_call_n // 40)
    samples: dict[int, list[float]] = {i: [] for i in range(len(contenders))}
    n = {i: _calls(c, s) for i, c in enumerate(contenders)}
    slices = {i: _slices(n[i]) for i in n}

    sync = [i for i, c in enumerate(contenders) if not c.is_async]
    built = {i: contenders[i].build(base_url) for i in sync}
    for i in sync:
        _time_sync(built[i][0], warmup)
    for _ in range(s.per_call_repeats):
        spent = dict.fromkeys(sync, 0.0)
        for k in range(SLICES):
            for i in sync:
                if k < len(slices[i]):
                    spent[i] += _time_sync(built[i][0], slices[i][k])
        for i in sync:
            samples[i].append(spent[i] / n[i])
    for i in sync:
        built[i][1]()

    async def run_async() -> None:
        chosen = [i for i, c in enumerate(contenders) if c.is_async]
        made = {i: contenders[i].build(base_url) for i in chosen}
        for i in chosen:
            await _time_async(made[i][0], warmup)
        for _ in range(s.per_call_repeats):
            spent = dict.fromkeys(chosen, 0.0)
            for k in range(SLICES):
                for i in chosen:
                    if k < len(slices[i]):
                        spent[i] += await _time_async(made[i][0], slices[i][k])
            for i in chosen:
                samples[i].append(spent[i] / n[i])
        for i in chosen:
            closed = made[i][1]()
            if asyncio.iscoroutine(closed):
                await closed

    asyncio.run(run_async())
    return [
        {
            "key": c.key,
            "endpoint": c.endpoint,
            "label": c.label,
            "is_async": c.is_async,
            "samples": samples[i],
            "calls": n[i],
        }
        for i, c in enumerate(contenders)
    ]
