"""Exactness of the decode loop: cached == uncached, == diffusers' LLaDA2Pipeline, == LLaDA's published algorithm."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blockgen.engine import DecodeSettings, FinishEvent, LowConfidenceScheduler, ThresholdScheduler, decode
from blockgen.engine.compat import PipelineModel
from blockgen.models import Attention


def _prompt(length, seed=0):
    return torch.randint(4, 267, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def _run(lm, prompts, scheduler, **settings):
    settings.setdefault("stop_token_ids", ())
    s = DecodeSettings(**settings)
    finished = {e.row: e.tokens for e in decode(lm.model, lm.family, scheduler, prompts, s) if isinstance(e, FinishEvent)}
    return [finished[i] for i in range(len(prompts))]


@pytest.mark.parametrize("block", [2, 4, 8])
@pytest.mark.parametrize("prompt_len", [3, 8, 11])
@pytest.mark.parametrize("lm_name", ["block_lm", "shifted_block_lm"])
def test_exact_cache_equals_uncached(request, lm_name, block, prompt_len):
    lm = request.getfixturevalue(lm_name)
    prompts = [_prompt(prompt_len, seed=block)]
    for scheduler in (LowConfidenceScheduler(), ThresholdScheduler(threshold=0.5)):
        runs = {mode: _run(lm, prompts, scheduler, max_new_tokens=21, block_size=block, steps=block, cache=mode)
                for mode in ("exact", "none", "prefix", "dual")}
        assert len(runs["none"][0]) == 21
        assert runs["exact"] == runs["none"] == runs["prefix"] == runs["dual"], (type(scheduler).__name__, runs)


def test_threshold_commits_several_tokens_per_step(block_lm):
    steps = [e for e in decode(block_lm.model, block_lm.family, ThresholdScheduler(threshold=0.5), [_prompt(8)],
                               DecodeSettings(max_new_tokens=32, block_size=8, steps=8, stop_token_ids=()))
             if hasattr(e, "committed")]
    assert sum(e.committed for e in steps) == 32
    assert len(steps) < 32 and max(e.committed for e in steps) > 1


@pytest.mark.parametrize(
    "prompt_lens,editing,threshold",
    [([5], None, 0.5), ([8], None, 0.95), ([5], 0.5, 0.5), ([13, 13], None, 0.6)],
    ids=["tail-in-block", "aligned-prompt", "editing", "batch"],
)
def test_conformance_with_diffusers_llada2_pipeline(block_lm, prompt_lens, editing, threshold):
    from diffusers import BlockRefinementScheduler, LLaDA2Pipeline

    block, steps = 4, 4
    gen = 4 * 6 - prompt_lens[0] % 4 if prompt_lens[0] % 4 else 24  # prompt + generation end on a block boundary
    prompts = [_prompt(n, seed=i + 7) for i, n in enumerate(prompt_lens)]
    mask_id = block_lm.family.mask_token_id
    pipe = LLaDA2Pipeline(model=PipelineModel(block_lm.model, Attention.block_causal(block), mask_id),
                          scheduler=BlockRefinementScheduler(block_length=block, num_inference_steps=steps),
                          tokenizer=block_lm.tokenizer)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(input_ids=torch.tensor(prompts), use_chat_template=False, gen_length=gen, block_length=block,
                    num_inference_steps=steps, temperature=0.0, sampling_method="greedy", threshold=threshold,
                    editing_threshold=editing, eos_early_stop=False, mask_token_id=mask_id, output_type="seq").sequences
    ours = _run(block_lm, prompts, BlockRefinementScheduler(block_length=block, num_inference_steps=steps,
                                                            threshold=threshold, editing_threshold=editing),
                max_new_tokens=gen, block_size=block, steps=steps, cache="exact")
    assert ours == expected.tolist()
    assert mask_id not in expected


def _llada_generate(model, prompt, steps, gen_length, block_length, mask_id, remasking="low_confidence"):
    """LLaDA's published generate() (low-confidence remasking, temperature 0, no CFG), transcribed."""
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt.clone()
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    for num_block in range(num_blocks):
        block_mask_index = x[:, prompt.shape[1] + num_block * block_length : prompt.shape[1] + (num_block + 1) * block_length] == mask_id
        mask_num = block_mask_index.sum(dim=1, keepdim=True)
        base, remainder = mask_num // steps, mask_num % steps
        num_transfer_tokens = torch.zeros(mask_num.size(0), steps, dtype=torch.int64) + base
        for i in range(mask_num.size(0)):
            num_transfer_tokens[i, : remainder[i]] += 1
        for i in range(steps):
            mask_index = x == mask_id
            logits = model(x)
            x0 = torch.argmax(logits, dim=-1)
            p = F.softmax(logits, dim=-1)
            x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
            x0_p[:, prompt.shape[1] + (num_block + 1) * block_length :] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -np.inf)
            transfer_index = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(confidence.shape[0]):
                _, select_index = torch.topk(confidence[j], k=int(num_transfer_tokens[j, i]))
                transfer_index[j, select_index] = True
            x[transfer_index] = x0[transfer_index]
    return x


@pytest.mark.parametrize("gen,block,steps_per_block", [(24, 8, 8), (24, 8, 3), (16, 16, 5)])
def test_llada_mode_matches_the_published_algorithm(llada_lm, gen, block, steps_per_block):
    prompt = _prompt(7, seed=3)
    family = llada_lm.family
    assert family.attention.value == "bidirectional" and not family.logit_shift
    bidirectional = Attention.bidirectional()
    with torch.inference_mode():
        def network(x):  # the mask token's logit removed, as blockgen's engine does
            logits = llada_lm.model(x, attention=bidirectional)
            logits[..., family.mask_token_id] = float("-inf")
            return logits

        expected = _llada_generate(network, torch.tensor([prompt]),
                                   steps_per_block * gen // block, gen, block, family.mask_token_id)
    ours = _run(llada_lm, [prompt], LowConfidenceScheduler(), max_new_tokens=gen, block_size=block,
                steps=steps_per_block, cache="none")
    assert ours[0] == expected[0, 7:].tolist()


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_approximate_caches_run_and_terminate_on_bidirectional(llada_lm, mode):
    prompts = [_prompt(7, seed=4), _prompt(3, seed=5)]
    exact = _run(llada_lm, prompts, LowConfidenceScheduler(), max_new_tokens=16, block_size=8, steps=8, cache="none")
    approx = _run(llada_lm, prompts, LowConfidenceScheduler(), max_new_tokens=16, block_size=8, steps=8, cache=mode)
    assert [len(t) for t in approx] == [16, 16]
    assert llada_lm.family.mask_token_id not in sum(approx, [])
    # the first step of the first block sees exactly what the uncached pass sees
    assert [a[0] for a in approx] == [e[0] for e in exact] or mode == "dual"


@pytest.mark.parametrize("lm_name,block", [("ar_lm", 1), ("block_lm", 4), ("shifted_block_lm", 4)])
def test_rows_of_one_prompt_prefill_once_with_the_same_result(request, lm_name, block, monkeypatch):
    """A writer's candidates share their prompt: its pass runs on one row and its keys/values are copied to the
    others; what every row samples is what it samples when each row runs the prompt itself."""
    import importlib

    decode_module = importlib.import_module("blockgen.engine.decode")

    lm = request.getfixturevalue(lm_name)
    prompts = [_prompt(11, seed=3)] * 3
    batches = []
    hook = lm.model.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape))

    def sampled():
        return _run(lm, prompts, ThresholdScheduler(threshold=0.5), max_new_tokens=12, block_size=block, steps=block,
                    cache="exact", temperature=0.9, generator=torch.Generator().manual_seed(5))

    try:
        shared = sampled()
        assert batches[0] == (1, 12 if block == 4 else 11) and all(b[0] == 3 for b in batches[1:])
        monkeypatch.setattr(decode_module._Loop, "_one_prompt", lambda self, plan: False)
        batches.clear()
        separate = sampled()
        assert batches[0][0] == 3
    finally:
        hook.remove()
    assert shared == separate and len({tuple(r) for r in shared}) > 1  # sampled apart, as before
