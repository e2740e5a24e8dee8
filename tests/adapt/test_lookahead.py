"""lookahead: per offset ahead of a block's next position, how often a block-diffusion model is right and sure; the
one-forward-per-cut layout gives what block-by-block decode views give."""

import math

import pytest
import torch

import blockgen
from blockgen.adapt.lookahead import lookahead
from blockgen.errors import InvalidArgumentError
from blockgen.models.attention import Attention


def _texts(lm):
    letters = "abcdefghijklmnopqrstuvwxyz"
    texts = []
    for start, cut in ((2, 5), (9, 7), (17, 4)):
        ids = lm.tokenizer("".join(letters[(start + i) % 26] for i in range(30)), add_special_tokens=False)["input_ids"]
        texts.append((ids[:cut], ids[cut:27]))
    return texts


@torch.no_grad()
def _by_views(lm, texts, threshold):
    """The same counts, one decode view at a time: [clean text before the block, the block with its first `cut`
    positions committed and the rest masked] under the model's block-causal attention."""
    size, mask_id = lm.family.block_size, lm.family.mask_token_id
    counts = {}
    for prompt, completion in texts:
        ids = torch.tensor(prompt + completion)
        for block in range(-(-len(prompt) // size), len(ids) // size):
            lo = block * size
            for cut in range(size):
                view = ids[: lo + size].clone()
                view[lo + cut:] = mask_id
                hidden = lm.model.hidden_states(view[None], attention=Attention.block_causal(size))[0]
                for p in range(lo + cut, lo + size):
                    probs = lm.model.logits(hidden[p - 1]).float().softmax(-1)  # the logit shift: p read at p - 1
                    top, picked = probs.max(-1)
                    entry = counts.setdefault(p - lo - cut + 1, [0, 0, 0, 0])
                    right, sure = int(picked) == int(ids[p]), float(top) > threshold
                    for i, flag in enumerate((True, right, sure, right and sure)):
                        entry[i] += flag
    return counts


def test_lookahead_equals_the_decode_views(learned):
    lm = blockgen.load(learned, device="cpu", dtype="float32", quantize=None)
    texts = _texts(lm)
    found = lookahead(lm, texts, threshold=0.5)
    want = _by_views(lm, texts, 0.5)
    assert [o.offset for o in found] == sorted(want) == [1, 2, 3, 4]
    for o in found:
        n, right, sure, both = want[o.offset]
        assert o.positions == n
        assert o.right == pytest.approx(right / n) and o.confident == pytest.approx(sure / n)
        assert (math.isnan(o.confident_right) and not sure) or o.confident_right == pytest.approx(both / sure)
    # the adapted model has learned the alphabet: right at every offset, and sure of the next letter more often
    # than of one further ahead
    assert all(o.right > 0.8 for o in found), found
    assert found[0].confident >= found[-1].confident


def test_lookahead_needs_a_block_diffusion_model(base, learned):
    with pytest.raises(InvalidArgumentError, match="block-causal"):
        lookahead(blockgen.load(base, device="cpu"), [([1, 2], [3, 4, 5, 6])])
    with pytest.raises(InvalidArgumentError, match="threshold"):
        lookahead(blockgen.load(learned, device="cpu"), [([1, 2], [3, 4, 5, 6])], threshold=0.0)
