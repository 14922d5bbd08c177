"""LangChain's published standard suites (``langchain-tests``) run against ResilientEmbeddings.

The unit suite runs offline; the integration suite runs over the loopback server. Their async
tests run on asyncio and trio (the adapter's async path is anyio, like the rest of the library).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from resilient_llm import RetryPolicy
from resilient_llm.integrations.langchain import ResilientEmbeddings
from resilient_llm.testing import MockOpenAIServer

from ..conftest import TEST_KEY

pytestmark = pytest.mark.anyio

ENV_BASE_URL = "http://127.0.0.1:9/v1"


class TestResilientEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[ResilientEmbeddings]:
        return ResilientEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"api_key": TEST_KEY, "model": "text-embedding-3-small"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"OPENAI_API_KEY": TEST_KEY, "OPENAI_BASE_URL": ENV_BASE_URL},
            {"model": "text-embedding-3-small"},
            {"api_key": TEST_KEY, "base_url": ENV_BASE_URL, "model": "text-embedding-3-small"},
        )


class TestResilientEmbeddingsIntegration(EmbeddingsIntegrationTests):
    base_url: ClassVar[str]

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _loopback_server(cls) -> Iterator[None]:
        with MockOpenAIServer() as server:
            cls.base_url = server.base_url
            yield

    @property
    def embeddings_class(self) -> type[ResilientEmbeddings]:
        return ResilientEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {
            "api_key": TEST_KEY,
            "base_url": self.base_url,
            "model": "text-embedding-3-small",
            "dimensions": 64,
            "deadline": 10.0,
            "retry": RetryPolicy(base_delay=0.01, max_delay=0.05),
        }
