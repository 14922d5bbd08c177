"""The row-level functions over pandas frames, against the loopback server with faults."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest

from resilient_llm import InvalidInput, ResilientClient, RetryPolicy
from resilient_llm.testing import MockOpenAIServer, chat_reply_text, embedding_vector

from ..conftest import TEST_KEY
from .conftest import require_extra

pd = require_extra("pandas", "pandas")

from resilient_llm.integrations.pandas import (  # noqa: E402 - only once pandas is known
    BatchStopped,
    collect_stats,
    embed_frame,
    map_frame,
    summarize_frame,
)

DIMS = 16
ROWS = 2000
POISONED = (7, 333, 1000, 1999)
# Eight attempts: at 20% faults a request fails for good once in ~400,000, so every row that is
# not poisoned must come back with its vector.
PATIENT = RetryPolicy(max_attempts=8, base_delay=0.001, max_delay=0.01)


def texts(n: int = ROWS) -> list[str]:
    return [f"row {i} of the corpus" + (" POISON" if i in POISONED else "") for i in range(n)]


def frame(n: int = ROWS) -> Any:
    # An index of its own, so that the test sees it kept (not reset to 0..n-1).
    return pd.DataFrame(
        {"id": range(n), "text": texts(n)}, index=pd.Index([f"doc-{i}" for i in range(n)])
    )


@pytest.fixture
def faulty() -> Iterator[MockOpenAIServer]:
    with MockOpenAIServer(fail_rate=0.2, seed=16) as server:
        yield server


@pytest.fixture
def client(faulty: MockOpenAIServer) -> Iterator[ResilientClient]:
    with ResilientClient(
        api_key=TEST_KEY, base_url=faulty.base_url, retry=PATIENT, max_concurrency=4
    ) as made:
        yield made


def test_every_row_comes_back_once_with_its_vector_or_its_error(
    faulty: MockOpenAIServer, client: ResilientClient
) -> None:
    df = frame()
    before = df.copy()

    out = embed_frame(df, client, column="text", dimensions=DIMS)

    pd.testing.assert_frame_equal(df, before)  # the input is not modified
    assert list(out.index) == list(df.index)
    assert list(out["id"]) == list(range(ROWS))
    assert list(out.columns) == [
        "id",
        "text",
        "embedding",
        "error_type",
        "error_message",
        "attempts",
        "batch_stats",
    ]
    failed = out[out["error_type"].notna()]
    assert list(failed["id"]) == list(POISONED)
    assert set(failed["error_type"]) == {"BadRequestError"}
    assert all("POISON" in message for message in failed["error_message"])
    assert (failed["attempts"] >= 1).all()
    assert failed["embedding"].isna().all()

    good = out[out["error_type"].isna()]
    for text, vector in zip(good["text"], good["embedding"], strict=True):
        assert vector == embedding_vector(text, DIMS)
    assert good["error_message"].isna().all()
    assert good["attempts"].isna().all()

    # The faults did happen, and the stats count what the server saw.
    seen = faulty.stats.snapshot()
    faults = sum(seen.faults_injected.values())
    assert faults >= 5
    summary = collect_stats(out)
    assert summary.rows == ROWS
    assert summary.batches == 1
    assert summary.failed_by_type == {"BadRequestError": len(POISONED)}
    assert summary.succeeded == ROWS - len(POISONED)
    assert summary.stats.requests == seen.total_requests
    assert summary.stats.prompt_tokens == seen.prompt_tokens
    assert summary.stats.retries == faults  # each fault was retried, and nothing else was


def test_frames_merge_into_one_account(faulty: MockOpenAIServer, client: ResilientClient) -> None:
    df = frame(600)
    parts = [embed_frame(df.iloc[i : i + 200], client, dimensions=DIMS) for i in (0, 200, 400)]

    summary = collect_stats(parts)

    assert summary.rows == 600
    assert summary.batches == 3
    assert summary.stats.total == 600
    assert summary.stats.requests == faulty.stats.total_requests
    assert summary.failed_by_type == {"BadRequestError": 2}  # rows 7 and 333
    # The same rows concatenated give the same account.
    assert collect_stats(pd.concat(parts)).stats == summary.stats


def test_stats_refuse_rows_that_no_longer_match(client: ResilientClient) -> None:
    out = embed_frame(frame(100), client, dimensions=DIMS)

    with pytest.raises(ValueError, match=r"count 100 rows \(1 failed\), but the frames hold 99"):
        collect_stats(out.iloc[:-1])
    with pytest.raises(ValueError, match="the stats of 0 batches"):
        collect_stats(out.iloc[1:])  # the first row carried the batch's stats
    with pytest.raises(ValueError, match="filtered, dropped or duplicated"):
        collect_stats(out[out["error_type"].isna()])  # the failed rows were filtered out
    with pytest.raises(KeyError, match="batch_stats"):
        collect_stats(frame(3))


def test_missing_and_blank_texts_fail_alone_and_are_never_sent() -> None:
    df = pd.DataFrame({"text": ["first", None, "   ", float("nan"), "last"]})
    with (
        MockOpenAIServer(record_texts=True) as server,
        ResilientClient(api_key=TEST_KEY, base_url=server.base_url) as client,
    ):
        out = embed_frame(df, client, dimensions=DIMS)
        sent = [text for record in server.requests for text in record.texts or ()]

    assert sorted(sent) == ["first", "last"]
    assert list(out["error_type"].isna()) == [True, False, False, False, True]
    assert set(out["error_type"].dropna()) == {InvalidInput.__name__}
    assert list(out["attempts"].dropna()) == [0, 0, 0]
    assert out["embedding"][0] == embedding_vector("first", DIMS)


def test_a_bad_key_stops_the_call_with_one_clear_error() -> None:
    with (
        MockOpenAIServer(api_key="sk-right-0123456789abcdef") as server,
        ResilientClient(api_key=TEST_KEY, base_url=server.base_url, max_concurrency=4) as client,
    ):
        with pytest.raises(BatchStopped) as caught:
            embed_frame(frame(), client, dimensions=DIMS)
        requests = server.stats.total_requests

    message = str(caught.value)
    assert "AuthenticationError (HTTP 401)" in message
    assert "no row of this batch is returned" in message
    assert TEST_KEY not in message
    stop = caught.value.result.stopped_by
    assert stop is not None
    assert stop.status == 401
    # One request per slot at most, not one per row: the call stopped at the first answer.
    assert 1 <= requests <= 4
    # It travels to the driver of Ray, Dask or Spark as itself.
    travelled = pickle.loads(pickle.dumps(caught.value))
    assert type(travelled) is BatchStopped
    assert str(travelled) == message
    assert travelled.result.stopped_by == stop


def test_summaries_carry_the_same_columns(
    faulty: MockOpenAIServer, client: ResilientClient
) -> None:
    df = frame(60)

    out = summarize_frame(df, client, max_words=20)

    failed = out[out["error_type"].notna()]
    assert list(failed["id"]) == [7]
    good = out[out["error_type"].isna()]
    assert list(good["summary"]) == [chat_reply_text(text) for text in good["text"]]
    assert collect_stats(out).stats.requests == faulty.stats.total_requests


def test_map_runs_a_function_of_the_client_and_the_row(
    faulty: MockOpenAIServer, client: ResilientClient
) -> None:
    df = frame(50)

    def tag(client: ResilientClient, row: dict[str, Any]) -> str:
        if row["id"] == 3:
            raise LookupError(f"no tag for row {row['id']}")
        return client.complete(row["text"])

    out = map_frame(df, client, tag, output_column="tag")

    failed = out[out["error_type"].notna()]
    assert list(failed["id"]) == [3, 7]
    assert list(failed["error_type"]) == ["LookupError", "BadRequestError"]
    assert failed["error_message"].iloc[0] == "no tag for row 3"
    good = out[out["error_type"].isna()]
    assert list(good["tag"]) == [chat_reply_text(text) for text in good["text"]]
    summary = collect_stats(out)
    assert summary.stats.requests == faulty.stats.total_requests
    assert summary.failed_by_type == {"BadRequestError": 1, "LookupError": 1}


def test_bad_arguments_are_named(client: ResilientClient) -> None:
    df = frame(3)
    with pytest.raises(KeyError, match="no column 'body' in the frame"):
        embed_frame(df, client, column="body")
    with pytest.raises(ValueError, match="already has the column"):
        embed_frame(df.assign(error_type=None), client)
    with pytest.raises(TypeError, match="expected a pandas DataFrame"):
        embed_frame(df.to_dict(), client)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn must be callable"):
        map_frame(df, client, "complete")  # type: ignore[arg-type]
