"""A job's client: the facades, told apart without the batch layer importing them."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from resilient_llm import AsyncBatchJob, AsyncResilientClient, BatchJob, ResilientClient
from resilient_llm.batch_api._clients import AsyncJobClient, JobClient

from ..conftest import TEST_KEY

MEMBERS = ("call", "chat", "embed_batch", "map")


@pytest.mark.parametrize(
    ("protocol", "facade", "is_async"),
    [(JobClient, ResilientClient, False), (AsyncJobClient, AsyncResilientClient, True)],
)
def test_each_facade_has_what_its_job_uses(protocol: Any, facade: Any, is_async: bool) -> None:
    """The protocols name what a job calls; a facade that renamed or re-coloured one of those
    members would break jobs at run time, so the two are checked against each other here."""
    for name in MEMBERS:
        assert inspect.iscoroutinefunction(getattr(protocol, name)) is is_async, name
        assert inspect.iscoroutinefunction(getattr(facade, name)) is is_async, name
    assert isinstance(inspect.getattr_static(facade, "openai"), property)
    client = facade(api_key=TEST_KEY, base_url="http://127.0.0.1:9/v1")
    assert {"chat_model", "embedding_model"} <= set(vars(client))  # no official client made


def test_each_job_takes_only_its_own_facade(tmp_path: Path) -> None:
    sync_client = ResilientClient(api_key=TEST_KEY, base_url="http://127.0.0.1:9/v1")
    async_client = AsyncResilientClient(api_key=TEST_KEY, base_url="http://127.0.0.1:9/v1")
    state = tmp_path / "job.json"
    with pytest.raises(TypeError) as caught:
        BatchJob.embeddings(async_client, ["a"], state=state)  # type: ignore[arg-type]
    assert str(caught.value) == (
        "client must be a ResilientClient, not AsyncResilientClient "
        "(use AsyncBatchJob with an AsyncResilientClient)"
    )
    with pytest.raises(TypeError) as caught:
        AsyncBatchJob._checked(sync_client)
    assert str(caught.value) == (
        "client must be an AsyncResilientClient, not ResilientClient "
        "(use BatchJob with a ResilientClient)"
    )
    with pytest.raises(TypeError, match=r"not NoneType$"):
        BatchJob.open(None, state)  # type: ignore[arg-type]
    assert not state.exists()  # nothing written for a refused client
    assert BatchJob._checked(sync_client) is sync_client
    assert AsyncBatchJob._checked(async_client) is async_client
