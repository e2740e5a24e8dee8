"""The real `openai` client against the server: completions and chat, streamed and not, usage, stop, n, and
blockgen's options as extra body fields; every answer equals the library's own."""

import httpx
import pytest
from openai import OpenAI
from serving import running

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about the tides."}]


@pytest.fixture(scope="module")
def client(ar_url):
    return OpenAI(base_url=f"{ar_url}/v1", api_key="unused", max_retries=0)


def test_models_are_listed(client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").owned_by == "blockgen"


def test_chat_equals_the_library_and_reports_usage(client, ar_lm):
    expected = ar_lm.generate_results(MESSAGES, chat=True, max_new_tokens=12)[0]
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason == "length"
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    prompt_tokens = len(ar_lm.encode(MESSAGES, chat=True))
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, 12)
    assert reply.usage.total_tokens == prompt_tokens + 12
    # max_completion_tokens is the newer name of the same limit
    newer = client.chat.completions.create(model="tiny", messages=MESSAGES, max_completion_tokens=12)
    assert newer.choices[0].message.content == expected.text


def test_chat_streams_every_piece_once_and_usage_last(client, ar_lm):
    expected = ar_lm.generate(MESSAGES, chat=True, max_new_tokens=20)
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20, stream=True))
    assert all(c.usage is None for c in plain) and plain[-1].choices[0].finish_reason == "length"


def test_stop_strings_end_the_answer_before_them(client, ar_lm):
    full = ar_lm.generate(MESSAGES, chat=True, max_new_tokens=24)
    stop = full[6:8]
    expected = full.split(stop)[0]
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=24, stop=stop)
    assert reply.choices[0].message.content == expected and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens < 24
    streamed = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=24, stop=[stop, "\x00"],
                                              stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected
    text = client.completions.create(model="tiny", prompt="The river", max_tokens=24, stop=[stop]).choices[0].text
    assert stop not in text


def test_completions_take_text_batches_and_token_ids(client, ar_lm):
    one = client.completions.create(model="tiny", prompt="The river", max_tokens=10)
    assert one.object == "text_completion" and one.choices[0].text == ar_lm.generate("The river", max_new_tokens=10)
    batch = client.completions.create(model="tiny", prompt=["The river", "A lighthouse keeper"], max_tokens=8, n=2)
    texts = ar_lm.generate(["The river", "A lighthouse keeper"], max_new_tokens=8)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert [c.text for c in batch.choices] == [texts[0], texts[0], texts[1], texts[1]]  # greedy: n equal choices
    assert batch.usage.completion_tokens == 32
    ids = ar_lm.encode("The river")
    assert client.completions.create(model="tiny", prompt=ids, max_tokens=10).choices[0].text == one.choices[0].text
    assert client.completions.create(model="tiny", prompt="The river").usage.completion_tokens == 16  # default


def test_streamed_completions_end_with_done(client, ar_lm, ar_url):
    pieces = client.completions.create(model="tiny", prompt="The river", max_tokens=10, stream=True)
    assert "".join(c.choices[0].text for c in pieces) == ar_lm.generate("The river", max_new_tokens=10)
    with httpx.stream("POST", f"{ar_url}/v1/completions", json={"model": "tiny", "prompt": "The river",
                                                                "max_tokens": 4, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_sampling_with_a_seed_reproduces(client, ar_lm):
    options = dict(model="tiny", messages=MESSAGES, max_tokens=16, temperature=0.9, top_p=0.95, seed=7)
    first = client.chat.completions.create(**options).choices[0].message.content
    assert client.chat.completions.create(**options).choices[0].message.content == first
    assert first == ar_lm.generate(MESSAGES, chat=True, max_new_tokens=16, temperature=0.9, top_p=0.95, seed=7)
    several = client.chat.completions.create(**options | {"n": 3})
    assert len(several.choices) == 3 and len({c.message.content for c in several.choices}) > 1


def test_block_diffusion_options_as_extra_body_fields(bd_lm, tmp_path):
    options = dict(block_size=4, threshold=0.5, scheduler="threshold")
    expected = bd_lm.generate("The tide", max_new_tokens=16, **options)
    with running(bd_lm, model_name="bd", jobs_dir=tmp_path) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        reply = client.completions.create(model="bd", prompt="The tide", max_tokens=16, extra_body=options)
        assert reply.choices[0].text == expected
        streamed = client.completions.create(model="bd", prompt="The tide", max_tokens=16, stream=True,
                                             extra_body=options)
        assert "".join(c.choices[0].text for c in streamed) == expected


def test_dry_as_an_extra_body_field(client, ar_lm):
    options = dict(dry_multiplier=2.0, dry_allowed_length=1, dry_breakers=[":"])
    expected = ar_lm.generate(MESSAGES, chat=True, max_new_tokens=24, **options)
    assert expected != ar_lm.generate(MESSAGES, chat=True, max_new_tokens=24)
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=24, extra_body=options)
    assert reply.choices[0].message.content == expected
