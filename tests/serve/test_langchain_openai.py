"""LangChain's ChatOpenAI (langchain-openai) pointed at the server: invoke and stream, with usage; the answer is
blockgen's own ChatBlockgen's."""

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from blockgen.integrations.langchain import ChatBlockgen

MESSAGES = [SystemMessage("Be brief."), HumanMessage("What makes the tides?")]


def _chat(url: str, **options) -> ChatOpenAI:
    return ChatOpenAI(model="tiny", base_url=f"{url}/v1", api_key="unused", max_tokens=16, temperature=0,
                      max_retries=0, **options)


def test_invoke_equals_the_in_process_chat_model(ar_url, ar_lm):
    expected = ChatBlockgen(client=ar_lm, max_tokens=16, temperature=0).invoke(MESSAGES)
    reply = _chat(ar_url).invoke(MESSAGES)
    assert reply.content == expected.content
    assert reply.usage_metadata["output_tokens"] == expected.usage_metadata["output_tokens"] == 16
    assert reply.usage_metadata["input_tokens"] == expected.usage_metadata["input_tokens"]
    assert reply.response_metadata["finish_reason"] == "length"


def test_stream_and_batch(ar_url, ar_lm):
    expected = ChatBlockgen(client=ar_lm, max_tokens=16, temperature=0).invoke(MESSAGES).content
    chunks = list(_chat(ar_url, stream_usage=True).stream(MESSAGES))
    assert "".join(c.content for c in chunks) == expected
    assert sum(c.usage_metadata["output_tokens"] for c in chunks if c.usage_metadata) == 16
    other = [HumanMessage("And the moon?")]
    replies = _chat(ar_url).batch([MESSAGES, other])
    assert replies[0].content == expected
    assert replies[1].content == ChatBlockgen(client=ar_lm, max_tokens=16, temperature=0).invoke(other).content
