"""The attention block (the checkpoint's, fixed by training) apart from the commit block (the user's): Fast-dLLM v2
attends in 32-token blocks and commits 8-token sub-blocks inside them. A finer commit block must not change the
attention pattern the checkpoint was trained with."""

import json

import pytest
import torch
from helpers import diffusion_checkpoint

import blockgen
from blockgen.errors import InvalidArgumentError
from blockgen.models import Attention


@pytest.fixture(scope="module")
def sub_block_lm(tmp_path_factory):
    """Block-causal with logit shift (Fast-dLLM v2 style): attention block 8, published commit block 4."""
    path = diffusion_checkpoint(tmp_path_factory.mktemp("sub") / "ckpt", shift=True, arch="qwen2", seed=3,
                                block_size=8)
    raw = json.loads((path / "config.json").read_text())
    raw["blockgen"]["decode_block"] = 4
    (path / "config.json").write_text(json.dumps(raw))
    return blockgen.load(path, device="cpu")


def _prompt(length, seed=0):
    return torch.randint(4, 267, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.no_grad()
def _reference(lm, prompt, new, commit, attention_block, threshold):
    """Greedy threshold decoding written plainly, no cache: commit blocks left to right (aligned to absolute
    positions), each forward over everything up to the end of the last attention block the commit block touches."""
    model, mask = lm.model, lm.family.mask_token_id
    canvas = list(prompt) + [mask] * new
    end = len(canvas)
    start = len(prompt)
    for sub in range(start // commit * commit, end, commit):
        positions = [p for p in range(max(sub, start), min(sub + commit, end))]
        while any(canvas[p] == mask for p in positions):
            att_end = min(end, -(-(sub + commit) // attention_block) * attention_block)
            ids = torch.tensor([canvas[:att_end]])
            logits = model(ids, attention=Attention.block_causal(attention_block))[0].float()
            logits[:, mask] = float("-inf")
            probs = logits.softmax(-1)
            masked = [p for p in positions if canvas[p] == mask]
            conf = {p: float(probs[p - 1].max()) for p in masked}  # shifted: token p from position p - 1
            best = max(masked, key=lambda p: conf[p])
            for p in masked:
                if conf[p] >= threshold or p == best:
                    canvas[p] = int(probs[p - 1].argmax())
    out = canvas[start:]
    stops = [i for i, t in enumerate(out) if t in lm.stop_token_ids]
    return out[: stops[0]] if stops else out  # a generation ends before its first stop token


def test_family_keeps_attention_block_and_publishes_a_commit_block(sub_block_lm):
    family = sub_block_lm.family
    assert family.block_size == 8 and family.decode_block == 4 and family.default_block == 4


@pytest.mark.parametrize("prompt_len", [5, 8, 13])
def test_sub_blocks_decode_under_the_checkpoints_attention(sub_block_lm, prompt_len):
    prompt = _prompt(prompt_len, seed=prompt_len)
    want = _reference(sub_block_lm, prompt, 21, commit=4, attention_block=8, threshold=0.5)
    for cache in ("exact", "none"):
        got = sub_block_lm.generate_results(prompt, max_new_tokens=21, threshold=0.5, cache=cache)[0].tokens
        assert list(got) == want, cache
    # the attention block matters: attending in 4-token blocks (what a commit block of 4 once also set) differs
    assert _reference(sub_block_lm, prompt, 21, commit=4, attention_block=4, threshold=0.5) != want


def test_commit_blocks_that_span_attention_blocks(sub_block_lm):
    prompt = _prompt(6, seed=1)
    want = _reference(sub_block_lm, prompt, 19, commit=16, attention_block=8, threshold=0.5)
    for cache in ("exact", "none"):
        got = sub_block_lm.generate_results(prompt, max_new_tokens=19, threshold=0.5, block_size=16, cache=cache)
        assert list(got[0].tokens) == want, cache


def test_a_commit_block_must_fit_the_attention_block(sub_block_lm):
    with pytest.raises(InvalidArgumentError, match="attention block 8") as info:
        sub_block_lm.generate("The tide", max_new_tokens=8, block_size=3)
    assert info.value.parameter == "block_size"
