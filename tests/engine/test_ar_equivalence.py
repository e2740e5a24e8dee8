"""AR equivalence: SmolLM2 with causal attention, logit shift, block size 1, one token per step == transformers'
greedy generate."""

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("cache", ["exact", "none"])
def test_block_size_one_equals_transformers_greedy(default_lm, reference, cache):
    assert default_lm.family.attention.value == "causal" and default_lm.family.logit_shift
    prompt = "Write a short paragraph about the history of printing."
    ids = default_lm.encode(prompt, chat=True)
    with torch.no_grad():
        out = reference.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False)
    expected = out[0, len(ids):].tolist()
    if expected[-1] in default_lm.stop_token_ids:
        expected = expected[:-1]
    result = default_lm.generate_results(ids, max_new_tokens=64, block_size=1, cache=cache)[0]
    assert result.tokens == expected
    assert result.stats.forward_passes == len(expected) + (result.finish_reason == "stop")
    assert len(expected) >= 32


def test_repetition_penalty_equals_transformers(default_lm, reference):
    ids = default_lm.encode("List the days of the week, then list them again.", chat=True)
    with torch.no_grad():
        out = reference.generate(torch.tensor([ids]), max_new_tokens=48, do_sample=False, repetition_penalty=1.3)
    expected = out[0, len(ids):].tolist()
    if expected[-1] in default_lm.stop_token_ids:
        expected = expected[:-1]
    result = default_lm.generate_results(ids, max_new_tokens=48, block_size=1, repetition_penalty=1.3)[0]
    assert result.tokens == expected
    plain = default_lm.generate_results(ids, max_new_tokens=48, block_size=1)[0]
    assert plain.tokens != result.tokens  # the penalty changed what was written
