"""A FastAPI service on the async facade: the event loop never blocks, every call has a deadline.

    pip install fastapi uvicorn
    python examples/fastapi_service.py               # serves http://127.0.0.1:8000
    python examples/fastapi_service.py --self-check  # 50 concurrent requests, then /health

``AsyncResilientClient`` is made once, in the app's lifespan, and shared by every request: it
keeps one official ``AsyncOpenAI`` per event loop and closes it on that loop at shutdown. With
``OPENAI_API_KEY`` set it calls OpenAI; without it, the lifespan starts the library's loopback
mock server.

Endpoints: ``POST /embed`` ``{"texts": [...]}``, ``POST /summarize`` ``{"text": ..., "max_words":
...}``, ``POST /chat`` ``{"prompt": ...}`` (the reply streamed to the browser as it is written),
``GET /health``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import openai
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from resilient_llm import AsyncResilientClient, DeadlineExceeded, StreamInterrupted


class EmbedRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=2048)
    dimensions: int | None = None


class ChatRequest(BaseModel):
    prompt: str = Field(min_length=1)


class SummarizeRequest(BaseModel):
    text: str = Field(min_length=1)
    max_words: int | None = Field(default=None, ge=1)


def create_app(**client_options: Any) -> FastAPI:
    """Build the app; ``client_options`` go to :class:`AsyncResilientClient` (tests pass a
    ``base_url``). With no options and no ``OPENAI_API_KEY``, a local mock server is used."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            options = dict(client_options)
            if not options and not os.environ.get("OPENAI_API_KEY"):
                from resilient_llm.testing import MockOpenAIServer

                server = stack.enter_context(MockOpenAIServer(latency=(0.05, 0.2)))
                options = {"base_url": server.base_url, "api_key": "sk-local-mock"}
            options.setdefault("deadline", 20.0)  # per call, retries included: < proxy timeouts
            app.state.llm = await stack.enter_async_context(AsyncResilientClient(**options))
            yield

    app = FastAPI(title="resilient_llm example", lifespan=lifespan)

    def llm(request: Request) -> AsyncResilientClient:
        client: AsyncResilientClient = request.app.state.llm
        return client

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/embed")
    async def embed(body: EmbedRequest, request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {"dimensions": body.dimensions} if body.dimensions else {}
        result = await llm(request).embed_batch(body.texts, **params)
        # One bad text fails alone, and says so: never a silent [] in its place.
        return {
            "embeddings": result.values,
            "failures": [
                {k: v for k, v in failure.as_dict().items() if k != "traceback"}
                for failure in result.failures
            ],
        }

    @app.post("/summarize")
    async def summarize(body: SummarizeRequest, request: Request) -> dict[str, str]:
        try:
            summary = await llm(request).summarize(body.text, max_words=body.max_words)
        except DeadlineExceeded as exc:
            raise HTTPException(504, str(exc)) from exc
        except openai.RateLimitError as exc:
            raise HTTPException(429, "upstream rate limit; try again later") from exc
        except openai.APIStatusError as exc:
            raise HTTPException(502, f"upstream error {exc.status_code}") from exc
        except openai.APIConnectionError as exc:
            raise HTTPException(502, "upstream unreachable") from exc
        return {"summary": summary}

    @app.post("/chat")
    async def chat(body: ChatRequest, request: Request) -> StreamingResponse:
        # Retried until the first chunk arrives, so a 429 or a reset before it never reaches
        # the browser; once text is flowing, a failure ends the stream with a note instead.
        try:
            stream = await llm(request).complete(body.prompt, stream=True, deadline=60)
        except DeadlineExceeded as exc:
            raise HTTPException(504, str(exc)) from exc
        except (openai.APIError, openai.OpenAIError) as exc:
            raise HTTPException(502, "upstream error") from exc

        async def text() -> AsyncIterator[str]:
            # The stream closes its connection when the browser goes away (this generator is
            # closed) or when it ends; it is bounded by its deadline either way.
            async with stream:
                try:
                    async for delta in stream:
                        yield delta
                except (StreamInterrupted, DeadlineExceeded) as exc:
                    yield f"\n[interrupted after {exc.chunks} chunks]"

        return StreamingResponse(text(), media_type="text/plain; charset=utf-8")

    return app


app = create_app()  # for `uvicorn fastapi_service:app`


async def self_check(n: int = 50) -> None:
    """Fire ``n`` concurrent /embed requests and time /health while they are in flight."""
    try:
        import httpx
    except ImportError:  # openai 3.x runs on httpx2, which has the same API
        import httpx2 as httpx  # type: ignore[no-redef]

    from resilient_llm.testing import MockOpenAIServer

    with MockOpenAIServer(latency=0.2) as server:
        service = create_app(base_url=server.base_url, api_key="sk-local-mock")
        async with service.router.lifespan_context(service):
            transport = httpx.ASGITransport(app=service)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                statuses: list[int] = []

                async def one(i: int) -> None:
                    response = await http.post("/embed", json={"texts": [f"text {i}"]})
                    statuses.append(response.status_code)

                started = time.perf_counter()
                async with anyio.create_task_group() as tasks:
                    for i in range(n):
                        tasks.start_soon(one, i)
                    # Until they wait on the server (its counter, polled: no event to await).
                    while server.stats.in_flight < n // 2:  # noqa: ASYNC110
                        await anyio.sleep(0.005)
                    health_started = time.perf_counter()
                    health = await http.get("/health")
                    health_ms = (time.perf_counter() - health_started) * 1000
                elapsed = time.perf_counter() - started
    print(f"/health answered {health.status_code} in {health_ms:.1f} ms while {n} embeds waited")
    print(
        f"{statuses.count(200)} of {n} /embed requests returned 200 in {elapsed:.2f} s "
        f"(server latency 200 ms each: they ran concurrently)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="resilient_llm FastAPI example")
    parser.add_argument("--self-check", action="store_true", help="run the check and exit")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if args.self_check:
        anyio.run(self_check)
        return 0
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
