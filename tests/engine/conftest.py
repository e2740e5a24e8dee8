import pytest
from helpers import diffusion_checkpoint, write_llada_checkpoint, tiny_hf_model

import blockgen


@pytest.fixture(scope="session")
def block_lm(tmp_path_factory):
    """Block-causal, no logit shift (SDAR / LLaDA2 / BD3-LM style), block size 4."""
    return blockgen.load(diffusion_checkpoint(tmp_path_factory.mktemp("bc") / "ckpt"), device="cpu")


@pytest.fixture(scope="session")
def shifted_block_lm(tmp_path_factory):
    """Block-causal with logit shift (Fast-dLLM v2 style), qwen2 layout."""
    path = diffusion_checkpoint(tmp_path_factory.mktemp("bcs") / "ckpt", shift=True, arch="qwen2", seed=1)
    return blockgen.load(path, device="cpu")


@pytest.fixture(scope="session")
def llada_lm(tmp_path_factory):
    """LLaDA names and family: bidirectional, no shift."""
    reference = tiny_hf_model("llama", num_key_value_heads=4, initializer_range=0.5, seed=2)
    return blockgen.load(write_llada_checkpoint(reference, tmp_path_factory.mktemp("llada") / "ckpt"), device="cpu")


@pytest.fixture(scope="session")
def ar_lm(tmp_path_factory):
    """A plain causal LM (AR mode: block size 1, no mask token)."""
    from helpers import save_checkpoint

    return blockgen.load(save_checkpoint(tiny_hf_model(), tmp_path_factory.mktemp("ar") / "ckpt"), device="cpu")
