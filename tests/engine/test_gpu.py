"""On CUDA: the cached engine equals the uncached one (fp32), and bf16 decoding runs end to end."""

import pytest
import torch
from helpers import diffusion_checkpoint

import blockgen
from blockgen.engine import DecodeSettings, FinishEvent, ThresholdScheduler, decode

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _tokens(lm, cache, prompts):
    settings = DecodeSettings(max_new_tokens=24, block_size=4, steps=4, cache=cache, stop_token_ids=())
    events = decode(lm.model, lm.family, ThresholdScheduler(threshold=0.5), prompts, settings)
    return {e.row: e.tokens for e in events if isinstance(e, FinishEvent)}


def test_cuda_cached_equals_uncached_fp32(tmp_path):
    lm = blockgen.load(diffusion_checkpoint(tmp_path / "bd"), device="cuda", dtype="float32")
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 15, 16, 17, 18]]
    assert _tokens(lm, "exact", prompts) == _tokens(lm, "none", prompts)


def test_cuda_bf16_generates(tmp_path):
    lm = blockgen.load(diffusion_checkpoint(tmp_path / "bd"), device="auto", dtype="auto")
    assert lm.dtype == torch.bfloat16
    result = lm.generate_results(["The river", "A thin line of"], max_new_tokens=20, block_size=4, threshold=0.5)
    assert all(len(r.tokens) <= 20 and r.finish_reason in ("stop", "length") for r in result)


def test_cuda_bf16_batch_equals_single(tmp_path):
    """Greedy rows of different lengths decoded together give what each gives alone, in bf16 on CUDA."""
    lm = blockgen.load(diffusion_checkpoint(tmp_path / "bd"), device="cuda", dtype="bfloat16")
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 15, 16, 17, 18], [19, 20, 21]]
    together = _tokens(lm, "exact", prompts)
    alone = {i: _tokens(lm, "exact", [p])[0] for i, p in enumerate(prompts)}
    assert together == alone
