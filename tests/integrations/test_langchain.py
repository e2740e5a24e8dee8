"""The LangChain completion LLM, chat model and document-writer runnable, on real tiny checkpoints."""

import asyncio

import pytest
from helpers import diffusion_checkpoint
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import ValidationError

import blockgen
from blockgen.integrations.langchain import BlockgenLLM, ChatBlockgen, document_writer, to_chat_messages

OPTIONS = dict(max_tokens=16, block_size=4, threshold=0.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return blockgen.load(diffusion_checkpoint(tmp_path_factory.mktemp("lc") / "bd", max_position_embeddings=1024))


class Recorder(BaseCallbackHandler):
    def __init__(self):
        self.tokens, self.events = [], []

    def on_llm_new_token(self, token, **kwargs):
        self.tokens.append(token)

    def on_custom_event(self, name, data, **kwargs):
        self.events.append((name, data))


def test_llm_matches_the_engine_and_streams_every_token_once(tiny):
    llm = BlockgenLLM(client=tiny, **OPTIONS)
    expected = tiny.generate("The tide", max_new_tokens=16, block_size=4, threshold=0.5)
    assert llm.invoke("The tide") == expected
    recorder = Recorder()
    chunks = list(llm.stream("The tide", config={"callbacks": [recorder]}))
    assert "".join(chunks) == expected and [t for t in recorder.tokens if t] == [c for c in chunks if c]
    assert asyncio.run(llm.ainvoke("The tide")) == expected
    assert llm.batch(["The tide", "The moon"]) == [expected, tiny.generate("The moon", max_new_tokens=16,
                                                                           block_size=4, threshold=0.5)]
    assert llm._identifying_params["model"] == "default" and llm._llm_type == "blockgen"


def test_an_abandoned_stream_blocks_no_other_caller(tiny):
    """A stream read to its first chunk and left open holds nothing: another call on the same model, from another
    thread, finishes (a lock held across yield made it wait for the abandoned stream forever)."""
    import threading

    llm = BlockgenLLM(client=tiny, **OPTIONS)
    expected = llm.invoke("The tide")
    left_open = llm.stream("The tide")
    first = next(left_open)
    got = []
    worker = threading.Thread(target=lambda: got.append(llm.invoke("The moon")), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and got == [tiny.generate("The moon", max_new_tokens=16, block_size=4,
                                                           threshold=0.5)]
    assert first + "".join(left_open) == expected  # and the stream left open still finishes as it would have


def test_stop_sequences_are_honoured(tiny):
    llm = BlockgenLLM(client=tiny, **OPTIONS)
    full = llm.invoke("The tide")
    stop = full[4:7]
    assert stop and llm.invoke("The tide", stop=[stop]) == full.split(stop)[0]
    assert BlockgenLLM(client=tiny, stop=[stop], **OPTIONS).invoke("The tide") == full.split(stop)[0]


def test_chat_model_templates_streams_and_reports_usage(tiny):
    chat = ChatBlockgen(client=tiny, **OPTIONS)
    messages = [SystemMessage("Be brief."), HumanMessage("hello", name="ann"), AIMessage("hi"), HumanMessage("tides?")]
    assert to_chat_messages(messages)[1] == {"role": "user", "content": "hello"}
    expected = tiny.generate(to_chat_messages(messages), chat=True, max_new_tokens=16, block_size=4, threshold=0.5)
    result = chat.invoke(messages)
    assert result.content == expected
    assert result.usage_metadata["output_tokens"] == 16 and result.usage_metadata["input_tokens"] > 0
    assert result.response_metadata["model_name"] == "default" and result.response_metadata["finish_reason"]
    recorder = Recorder()
    chunks = list(chat.stream(messages, config={"callbacks": [recorder]}))
    assert "".join(c.content for c in chunks) == expected
    assert "".join(recorder.tokens) == expected and [t for t in recorder.tokens if t] == [c.content for c in chunks
                                                                                           if c.content]
    assert sum(1 for c in chunks if c.usage_metadata) == 1 and chunks[-1].chunk_position == "last"
    assert asyncio.run(chat.ainvoke(messages)).content == expected


def test_bad_parameters_are_validation_errors(tiny):
    for bad in (dict(temperature=-1), dict(max_tokens=0), dict(scheduler="nope"), dict(top_p=1.5),
                dict(kv_cache="sometimes"), dict(dry_multiplier=-1)):
        with pytest.raises(ValidationError, match=next(iter(bad))):  # named as this class names it
            ChatBlockgen(client=tiny, **bad)
        with pytest.raises(ValidationError):
            BlockgenLLM(client=tiny, **bad)


def test_kv_cache_is_blockgens_and_cache_stays_langchains(tiny):
    llm = BlockgenLLM(client=tiny, kv_cache="none", cache=False, **OPTIONS)  # LangChain's response cache off
    assert llm._options(None, {}) == {"max_new_tokens": 16, "block_size": 4, "threshold": 0.5, "cache": "none"}
    assert llm.invoke("The tide") == tiny.generate("The tide", max_new_tokens=16, block_size=4, threshold=0.5)


def test_dry_reaches_the_engine(tiny):
    llm = BlockgenLLM(client=tiny, max_tokens=24, dry_multiplier=3.0)
    assert llm._options(None, {}) == {"max_new_tokens": 24, "dry_multiplier": 3.0}
    assert llm.invoke("The tide") == tiny.generate("The tide", max_new_tokens=24, dry_multiplier=3.0)


def test_document_writer_runnable_and_tool(tiny, tmp_path):
    writer = document_writer(tiny, out_root=tmp_path, paragraph_words=40, block_size=4, threshold=0.5,
                             cleanup="repeats", planner="template")
    recorder = Recorder()
    markdown = writer.invoke({"topic": "how tides work", "words": 80}, config={"callbacks": [recorder]})
    assert markdown.startswith("# How tides work") and (tmp_path / "how-tides-work" / "state.json").is_file()
    kinds = [data["kind"] for name, data in recorder.events if name == "blockgen_progress"]
    assert kinds[0] == "plan" and kinds[-1] == "done" and "paragraph" in kinds
    tool = document_writer(tiny, out_root=tmp_path, output="summary", paragraph_words=40, block_size=4,
                           threshold=0.5, cleanup="repeats", planner="template").as_tool(
        name="write_long_document", description="Write a long report or story to files.")
    summary = tool.invoke({"topic": "a lighthouse keeper", "kind": "story", "words": 60})
    assert summary.startswith("Wrote story") and "document.md" in summary
    with pytest.raises(ValidationError):
        writer.invoke({"topic": "", "words": 80})
    with pytest.raises(blockgen.errors.InvalidArgumentError, match="candidates"):
        document_writer(tiny, candidates=0)


@pytest.mark.slow
@pytest.mark.parametrize("script,args,expect", [
    ("langchain_chain.py", ["the tides", "{model}"], None),
    ("langchain_agent_tool.py", ["{tmp}", "60", "{model}"], "Wrote report"),
])
def test_examples_run(tmp_path, script, args, expect):
    """The examples as users run them, on a tiny checkpoint (the chat model itself runs on the default model in
    the standard integration suite, the writer in the document tests)."""
    import subprocess
    import sys
    from pathlib import Path

    model = diffusion_checkpoint(tmp_path / "bd", max_position_embeddings=1024)
    path = Path(__file__).parents[2] / "examples" / script
    argv = [a.replace("{tmp}", str(tmp_path / "out")).replace("{model}", str(model)) for a in args]
    result = subprocess.run([sys.executable, str(path), *argv], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines and (expect is None or expect in result.stdout)
