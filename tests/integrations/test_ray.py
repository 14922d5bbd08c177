"""Ray Data actors over the loopback server: no row lost, one account, one budget, one error.

One local Ray (2 CPUs) for the whole module: starting one costs 10-30 s here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resilient_llm import LocalRateLimiter, ResilientClient, RetryPolicy
from resilient_llm.testing import MockOpenAIServer, chat_reply_text, embedding_vector

from ..conftest import TEST_KEY
from .conftest import require_extra

ray = require_extra("ray", "ray")
pd = require_extra("pandas", "ray")

from resilient_llm.integrations.ray import (  # noqa: E402 - only once ray is known
    BatchStopped,
    Embed,
    actor_rate_limiter,
    collect_stats,
    embed_dataset,
    map_dataset,
    summarize_dataset,
)

pytestmark = [
    # Ray's own deprecations and advice, raised in the driver while it plans a dataset.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    pytest.mark.filterwarnings("ignore:The minimum number of concurrent actors:UserWarning"),
    pytest.mark.timeout(300),
]

DIMS = 16
ROWS = 2000
POISONED = (7, 333, 1000, 1001, 1999)
PATIENT = RetryPolicy(max_attempts=8, base_delay=0.001, max_delay=0.01)
# Half a CPU per actor: on 2 CPUs, two actors leave room for Ray's own small tasks.
HALF_CPU = {"num_cpus": 0.5}


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}},
    )
    try:
        yield
    finally:
        ray.shutdown()


def rows(n: int = ROWS) -> Any:
    texts = [f"row {i} of the corpus" + (" POISON" if i in POISONED else "") for i in range(n)]
    frame = pd.DataFrame({"id": range(n), "text": texts})
    # Eight blocks, so that both actors get work.
    return ray.data.from_pandas([frame.iloc[i : i + n // 8] for i in range(0, n, n // 8)])


def test_every_row_comes_back_once_and_the_stats_match_the_server() -> None:
    with MockOpenAIServer(fail_rate=0.2, seed=16) as server:
        out = embed_dataset(
            rows(),
            column="text",
            actors=2,
            rows_per_batch=250,
            api_key=TEST_KEY,
            base_url=server.base_url,
            retry=PATIENT,
            max_concurrency=4,
            dimensions=DIMS,
            map_batches_options=HALF_CPU,
        ).materialize()
        seen = server.stats.snapshot()
        summary = collect_stats(out)
        df = out.to_pandas().sort_values("id")

    assert list(df["id"]) == list(range(ROWS))  # every row, once
    failed = df[df["error_type"].notna()]
    assert list(failed["id"]) == list(POISONED)
    assert set(failed["error_type"]) == {"BadRequestError"}
    assert all("poison marker" in message for message in failed["error_message"])
    assert (failed["attempts"] >= 1).all()
    assert failed["embedding"].isna().all()
    good = df[df["error_type"].isna()]
    for text, vector in zip(good["text"], good["embedding"], strict=True):
        assert list(vector) == embedding_vector(text, DIMS)

    faults = sum(seen.faults_injected.values())
    assert faults >= 10
    assert summary.rows == ROWS
    assert summary.batches == ROWS // 250
    assert summary.failed_by_type == {"BadRequestError": len(POISONED)}
    assert summary.succeeded == ROWS - len(POISONED)
    assert summary.stats.requests == seen.total_requests
    assert summary.stats.prompt_tokens == seen.prompt_tokens
    assert summary.stats.retries == faults


def test_a_bad_key_stops_the_job_with_one_clear_error() -> None:
    with MockOpenAIServer(api_key="sk-right-0123456789abcdef") as server:
        job = embed_dataset(
            rows(),
            actors=2,
            rows_per_batch=250,
            api_key=TEST_KEY,
            base_url=server.base_url,
            max_concurrency=4,
            map_batches_options=HALF_CPU,
        )
        with pytest.raises(Exception) as caught:  # noqa: PT011 - Ray wraps it; read below
            job.materialize()
        requests = server.stats.total_requests

    message = str(caught.value)
    assert "BatchStopped: the batch stopped early on AuthenticationError (HTTP 401)" in message
    assert TEST_KEY not in message
    # Each actor's first batch stopped at its first answers; the actor sent nothing after that.
    assert 1 <= requests <= 2 * 4


def test_the_rate_budget_is_divided_among_the_actors() -> None:
    budget = 10  # requests per second for the whole job: 600 per minute
    with MockOpenAIServer() as server:
        out = embed_dataset(
            rows(80),
            actors=2,
            rows_per_batch=10,
            api_key=TEST_KEY,
            base_url=server.base_url,
            batch_size=1,  # one request per row
            requests_per_minute=budget * 60,
            rate_window=1.0,
            map_batches_options=HALF_CPU,
        ).materialize()
        busiest = server.max_requests_in_window(3.0)
        total = server.stats.total_requests

    assert collect_stats(out).stats.requests == total == 80
    # Each actor's bucket holds half the budget and refills at half the rate: any 3 s hold at
    # most 0.5 + 1.5 budgets each, 4 budgets for both (+3 for requests the load delayed into
    # the window). Were the budget not divided, 80 requests would be sent within about 2 s.
    assert busiest <= 4 * budget + 3


def test_a_shared_limiter_is_built_in_each_actor_and_paces_every_request(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"

    # Defined here so that it travels to the actors by value.
    class Ledger:
        """A limiter that books nothing and writes down who asked: a line per reservation."""

        def __init__(self, path: Path) -> None:
            self.path = path

        def reserve(self, tokens: int = 0) -> float:
            with self.path.open("a") as file:
                file.write(f"{os.getpid()}\n")
            return 0.0

        def pause(self, seconds: float) -> None:
            pass

    def answer(client: ResilientClient, text: str) -> str:
        return client.complete(text)

    with MockOpenAIServer() as server:
        out = map_dataset(
            rows(40),
            answer,
            column="text",
            actors=2,
            rows_per_batch=5,
            api_key=TEST_KEY,
            base_url=server.base_url,
            rate_limiter=functools.partial(Ledger, ledger),
            map_batches_options=HALF_CPU,
        ).materialize()
        total = server.stats.total_requests

    df = out.to_pandas().sort_values("id")
    good = df[df["error_type"].isna()]
    assert list(good["result"]) == [chat_reply_text(text) for text in good["text"]]
    assert list(df[df["error_type"].notna()]["id"]) == [7]
    pids = ledger.read_text().split()
    assert len(pids) == total == collect_stats(out).stats.requests
    assert len(set(pids)) == 2  # one limiter per actor, both used


def test_summaries_over_a_dataset() -> None:
    with MockOpenAIServer(fail_rate=0.2, seed=5) as server:
        out = summarize_dataset(
            rows(40),
            actors=1,
            rows_per_batch=10,
            api_key=TEST_KEY,
            base_url=server.base_url,
            retry=PATIENT,
            max_words=12,
            map_batches_options=HALF_CPU,
        ).materialize()
        total = server.stats.total_requests

    df = out.to_pandas().sort_values("id")
    good = df[df["error_type"].isna()]
    assert list(df[df["error_type"].notna()]["id"]) == [7]
    assert list(good["summary"]) == [chat_reply_text(text) for text in good["text"]]
    summary = collect_stats(out)
    assert summary.batches == 4
    assert summary.stats.requests == total


# --- without a cluster ------------------------------------------------------------------------


def test_an_actor_gets_its_share_of_the_budget() -> None:
    limiter = actor_rate_limiter(
        actors=(1, 4), requests_per_minute=600, tokens_per_minute=40_000, rate_limiter=None
    )
    assert isinstance(limiter, LocalRateLimiter)
    assert (limiter.requests_per_minute, limiter.tokens_per_minute) == (150, 10_000)
    assert (
        actor_rate_limiter(
            actors=None, requests_per_minute=None, tokens_per_minute=None, rate_limiter=None
        )
        is None
    )
    shared = LocalRateLimiter(requests_per_minute=60)
    assert (
        actor_rate_limiter(
            actors=3, requests_per_minute=None, tokens_per_minute=None, rate_limiter=shared
        )
        is shared
    )
    assert (
        actor_rate_limiter(
            actors=3, requests_per_minute=None, tokens_per_minute=None, rate_limiter=lambda: shared
        )
        is shared
    )


def test_rate_options_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="pass actors="):
        Embed(api_key=TEST_KEY, base_url="http://127.0.0.1:9/v1", requests_per_minute=60)
    with pytest.raises(ValueError, match="not both"):
        actor_rate_limiter(
            actors=2, requests_per_minute=60, tokens_per_minute=None, rate_limiter=LocalRateLimiter
        )
    with pytest.raises(TypeError, match="must return a RateLimiter"):
        actor_rate_limiter(
            actors=2, requests_per_minute=None, tokens_per_minute=None, rate_limiter=lambda: 42
        )
    with pytest.raises(ValueError, match="actors must be an int >= 1"):
        embed_dataset(rows(8), actors=(3, 2))
    with pytest.raises(TypeError, match="unexpected option 'colour'"):
        embed_dataset(rows(8), colour="blue")


def test_an_actor_stopped_by_a_bad_key_sends_nothing_more() -> None:
    with MockOpenAIServer(api_key="sk-right-0123456789abcdef") as server:
        udf = Embed(api_key=TEST_KEY, base_url=server.base_url, max_concurrency=2)
        try:
            with pytest.raises(BatchStopped, match="AuthenticationError"):
                udf(pd.DataFrame({"text": ["a", "b", "c", "d"]}))
            sent = server.stats.total_requests
            # Ray may already have queued the actor's next batch before it aborts the job.
            with pytest.raises(BatchStopped, match="AuthenticationError"):
                udf(pd.DataFrame({"text": ["e", "f"]}))
            assert server.stats.total_requests == sent
        finally:
            udf.close()


def test_an_actor_builds_its_own_client_from_options() -> None:
    udf = Embed(
        column="body",
        api_key=TEST_KEY,
        base_url="http://127.0.0.1:9/v1",
        max_concurrency=3,
        dimensions=DIMS,
        actors=2,
        requests_per_minute=120,
    )
    try:
        assert udf.client.max_concurrency == 3
        assert isinstance(udf.client.rate_limiter, LocalRateLimiter)
        assert udf.client.rate_limiter.requests_per_minute == 60
        assert udf.batch_options == {"dimensions": DIMS}
        assert TEST_KEY not in repr(udf)
    finally:
        udf.close()
    with pytest.raises(TypeError, match="unexpected option 'colour'"):
        Embed(api_key=TEST_KEY, colour="blue")
