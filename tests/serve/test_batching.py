"""A bounded load test on loopback: concurrent streaming clients are decoded in shared batches, each answer equals
the request's answer alone, none is lost; a client that goes away frees its row and the server stays healthy."""

import asyncio
import time

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI


CLIENTS = 32


def _request(i: int) -> dict:
    """Prompts of different lengths and lengths of answer: they still share batches (an AR model)."""
    words = " ".join(["tide"] * (i % 7))
    return dict(messages=[{"role": "user", "content": f"Question {i}: {words} why?"}], max_tokens=6 + (i * 5) % 29)


async def _stream_all(url: str, n: int) -> list[tuple[str, str, int]]:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)

    async def one(i: int):
        stream = await client.chat.completions.create(model="tiny", stream=True,
                                                      stream_options={"include_usage": True}, **_request(i))
        text, reason, tokens = "", None, None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                reason = chunk.choices[0].finish_reason or reason
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return text, reason, tokens

    try:
        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.close()


def test_32_concurrent_streams_each_equal_their_answer_alone(ar_lm, serve):
    url = serve(ar_lm, model_name="tiny", max_batch=64)
    alone = [ar_lm.generate_results(_request(i)["messages"], chat=True,
                                    max_new_tokens=_request(i)["max_tokens"])[0] for i in range(CLIENTS)]
    answers = asyncio.run(_stream_all(url, CLIENTS))
    assert len(answers) == CLIENTS
    for i, (text, reason, tokens) in enumerate(answers):
        assert (text, reason, tokens) == (alone[i].text, alone[i].finish_reason, len(alone[i].tokens)), i
    stats = httpx.get(f"{url}/health").json()
    assert stats["rows"] == CLIENTS and stats["cancelled_rows"] == 0
    assert stats["batches"] < CLIENTS and stats["largest_batch"] > 1  # requests were decoded together


def test_block_diffusion_rows_batch_and_equal_their_answer_alone(bd_lm, serve):
    url = serve(bd_lm, model_name="bd")
    options = dict(block_size=4, threshold=0.5)
    prompts = ["The tide", "A lighthouse keeper found", "Why", "The sea is wide and the night"]
    alone = [bd_lm.generate(p, max_new_tokens=16, **options) for p in prompts]

    async def run():
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        replies = await asyncio.gather(*(client.completions.create(model="bd", prompt=p, max_tokens=16,
                                                                   extra_body=options) for p in prompts))
        await client.close()
        return [r.choices[0].text for r in replies]

    assert asyncio.run(run()) == alone


def test_bidirectional_rows_of_different_lengths_equal_their_answer_alone(tmp_path, serve):
    from helpers import tiny_hf_model, write_llada_checkpoint

    import blockgen

    reference = tiny_hf_model("llama", num_key_value_heads=4, initializer_range=0.5, seed=2)
    lm = blockgen.load(write_llada_checkpoint(reference, tmp_path / "llada"), device="cpu")
    url = serve(lm, model_name="llada")
    options = dict(block_size=1)  # one token a block, yet each row sees its whole masked tail
    asks = [("The tide", 8), ("A lighthouse keeper found", 12), ("Why", 16), ("The sea", 8)]
    alone = [lm.generate(p, max_new_tokens=m, **options) for p, m in asks]

    async def run():
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        replies = await asyncio.gather(*(client.completions.create(model="llada", prompt=p, max_tokens=m,
                                                                   extra_body=options) for p, m in asks))
        await client.close()
        return [r.choices[0].text for r in replies]

    assert asyncio.run(run()) == alone


@pytest.mark.parametrize("lm_name,options", [("ar_lm", {}), ("bd_lm", {"block_size": 4, "threshold": 0.5})])
def test_requests_that_arrive_mid_batch_join_it_and_equal_their_answer_alone(request, lm_name, options, serve):
    lm = request.getfixturevalue(lm_name)
    url = serve(lm, model_name="m")
    first = dict(prompt="Once upon a time", max_tokens=600)  # a long answer (both models): the others join it
    later = [dict(prompt=p, max_tokens=m if not options else 600)
             for p, m in (("Why", 20), ("The harbour at dawn was full of boats and gulls and", 33), ("Tides", 9))]
    alone = [lm.generate(r["prompt"], max_new_tokens=r["max_tokens"], **options) for r in [first, *later]]

    async def run():
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        stream = await client.completions.create(model="m", stream=True, extra_body=options, **first)
        text, chunks = "", aiter(stream)
        text += (await anext(chunks)).choices[0].text  # the first batch is running
        async def one_after_another():  # each joins at a later boundary than the one before
            return [await client.completions.create(model="m", extra_body=options, **r) for r in later]

        joined = asyncio.ensure_future(one_after_another())
        async for chunk in chunks:
            text += chunk.choices[0].text
        replies = await joined
        await client.close()
        return [text] + [r.choices[0].text for r in replies]

    assert asyncio.run(run()) == alone
    stats = httpx.get(f"{url}/health").json()
    assert stats["joined_rows"] == len(later) and stats["batches"] == 1, stats  # they joined the running batch


def test_a_client_that_goes_away_frees_its_row(ar_lm, serve):
    url = serve(ar_lm, model_name="tiny")
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    long = dict(messages=[{"role": "user", "content": "Go on forever."}], max_tokens=3500)
    stream = client.chat.completions.create(model="tiny", stream=True, **long)
    received = 0
    for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received == 3:
            break
    stream.close()  # the client goes away mid-stream
    start = time.monotonic()
    while httpx.get(f"{url}/health").json()["cancelled_rows"] < 1:
        assert time.monotonic() - start < 10, "the abandoned row was never retired"
        time.sleep(0.02)
    # a non-streaming client that gives up is noticed too
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", **long}, timeout=0.5)
    while httpx.get(f"{url}/health").json()["cancelled_rows"] < 2:
        assert time.monotonic() - start < 20, "the abandoned non-streaming row was never retired"
        time.sleep(0.02)
    # they retired long before their 3,500 tokens: the next request is served at once, as the one alone would be
    messages = [{"role": "user", "content": "hello"}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8)
    assert reply.choices[0].message.content == ar_lm.generate(messages, chat=True, max_new_tokens=8)
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["waiting_rows"] == 0 and health["cancelled_rows"] == 2


