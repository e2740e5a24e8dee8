"""On CUDA: adaptation trains under bf16 autocast and the adapter loads and decodes in bf16."""

import pytest
import torch

import blockgen
from blockgen.adapt import AdaptConfig, adapt

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_adapt_bf16(tmp_path):
    from helpers import save_checkpoint, tiny_hf_model

    base = save_checkpoint(tiny_hf_model(), tmp_path / "base")
    data = tmp_path / "text.txt"
    data.write_text("abcdefghijklmnopqrstuvwxyz\n" * 200)
    config = AdaptConfig.build(base=str(base), data=[str(data)], steps=20, batch_size=8, seq_len=64, lora_rank=4,
                               block_sizes=[1, 4], device="cuda", checkpoint_every=10)
    result = adapt(config, tmp_path / "run")
    assert result.finished and result.loss is not None and result.loss == result.loss
    lm = blockgen.load(tmp_path / "run", device="cuda", dtype="bfloat16")
    out = lm.generate_results("abcdefgh", max_new_tokens=16, block_size=4, threshold=0.9)[0]
    assert out.finish_reason in ("stop", "length") and out.stats.forward_passes >= 1
