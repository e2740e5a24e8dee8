"""LangChain's standard chat-model suites (langchain-tests): unit tests, and integration tests that run offline
against the embedded default model."""

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from blockgen.integrations.langchain import ChatBlockgen  # noqa: E402


class TestChatBlockgenUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self):
        return ChatBlockgen

    @property
    def chat_model_params(self):
        return {"model": "default", "device": "cpu"}  # construction is lazy: nothing loads here


@pytest.mark.slow
class TestChatBlockgenIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self):
        return ChatBlockgen

    @property
    def chat_model_params(self):
        return {"model": "default", "device": "cpu", "max_tokens": 8}
