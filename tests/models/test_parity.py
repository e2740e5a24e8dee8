"""The native decoder equals transformers' reference models on the same weights, loaded the way users load them."""

import pytest
import torch
from helpers import save_checkpoint, tiny_hf_model

import blockgen
from blockgen.models import Attention

CASES = [
    ("llama", {"tie": False}),
    ("llama", {"tie": True, "num_key_value_heads": 4}),
    ("qwen2", {"tie": False}),
    ("qwen3", {"tie": True}),
]


def _ids(batch=2, length=23, vocab=128, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g)


@pytest.mark.parametrize("arch,kwargs", CASES, ids=[f"{a}-{'tied' if k['tie'] else 'untied'}" for a, k in CASES])
def test_logits_equal_transformers(tmp_path, arch, kwargs):
    reference = tiny_hf_model(arch, **kwargs)
    lm = blockgen.load(save_checkpoint(reference, tmp_path / arch), device="cpu", dtype="float32")
    assert lm.config.architecture == arch
    assert lm.config.tie_word_embeddings == kwargs["tie"]
    ids = _ids()
    with torch.no_grad():
        expected = reference(ids).logits
    got = lm.model(ids, attention=Attention.causal())
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4


def test_sharded_checkpoint_loads_through_its_index(tmp_path):
    reference = tiny_hf_model("qwen2")
    directory = save_checkpoint(reference, tmp_path / "sharded", max_shard_size="20KB")
    assert (directory / "model.safetensors.index.json").is_file()
    assert len(list(directory.glob("*.safetensors"))) > 1
    lm = blockgen.load(directory, device="cpu")
    ids = _ids(batch=1)
    with torch.no_grad():
        expected = reference(ids).logits
    assert (lm.model(ids) - expected).abs().max().item() <= 1e-4


def test_ntk_factor_equals_reference_with_scaled_theta(tmp_path):
    """theta' = factor * theta: blockgen with factor f matches transformers built with rope_theta = f * theta."""
    base = tiny_hf_model("llama", rope_theta=5000.0)
    scaled = tiny_hf_model("llama", rope_theta=5000.0 * 3.5)
    scaled.load_state_dict(base.state_dict())
    lm = blockgen.load(save_checkpoint(base, tmp_path / "base"), device="cpu", ntk_factor=3.5)
    ids = _ids(length=40)
    with torch.no_grad():
        expected, unscaled = scaled(ids).logits, base(ids).logits
    got = lm.model(ids)
    assert (got - expected).abs().max().item() <= 1e-4
    assert (got - unscaled).abs().max().item() > 1e-3
    lm.model.set_ntk_factor(1.0)
    assert (lm.model(ids) - unscaled).abs().max().item() <= 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_bf16_cuda_close_to_fp32_reference(tmp_path, arch):
    reference = tiny_hf_model(arch)
    lm = blockgen.load(save_checkpoint(reference, tmp_path / arch), device="auto", dtype="auto")
    assert lm.device.type == "cuda" and lm.dtype == torch.bfloat16
    ids = _ids()
    with torch.no_grad():
        expected = reference(ids).logits
        ref_bf16 = reference.to("cuda", torch.bfloat16)(ids.cuda()).logits.float().cpu()
    got = lm.model(ids.cuda()).float().cpu()
    scale = expected.abs().max().item()
    # bf16 keeps ~3 significant digits: compare with fp32 relative to the logit scale, and with transformers' bf16.
    assert (got - expected).abs().max().item() <= 0.05 * scale
    assert (got - ref_bf16).abs().max().item() <= 0.05 * scale


def test_auto_dtype_on_cpu_follows_native_bf16_and_the_override(tmp_path, monkeypatch):
    from blockgen.errors import InvalidArgumentError
    from blockgen.runtime import auto_dtype, cpu_bf16

    path = save_checkpoint(tiny_hf_model("llama"), tmp_path / "m")
    monkeypatch.delenv("BLOCKGEN_CPU_DTYPE", raising=False)
    expected = torch.bfloat16 if cpu_bf16() else torch.float32
    assert auto_dtype(torch.device("cpu")) == expected
    assert blockgen.load(path, device="cpu").dtype == expected
    monkeypatch.setenv("BLOCKGEN_CPU_DTYPE", "bfloat16")
    assert blockgen.load(path, device="cpu").dtype == torch.bfloat16
    assert blockgen.load(path, device="cpu", dtype="float32").dtype == torch.float32  # an explicit dtype wins
    monkeypatch.setenv("BLOCKGEN_CPU_DTYPE", "float8")
    with pytest.raises(InvalidArgumentError, match="BLOCKGEN_CPU_DTYPE"):
        blockgen.load(path, device="cpu")


def test_bf16_on_cpu_stays_close_to_fp32_on_the_default(default_lm):
    """The embedded default in bfloat16 (CPU): next-token distributions close to float32's, greedy text sensible."""
    bf16 = blockgen.load("default-ar", device="cpu", dtype="bfloat16", quantize=None)
    ids = default_lm.tokenizer("The moon pulls the ocean, and twice a day the tide", return_tensors="pt").input_ids
    with torch.no_grad():
        want = torch.log_softmax(default_lm.model(ids).float(), -1)
        got = torch.log_softmax(bf16.model(ids).float(), -1)
    assert (want.argmax(-1) == got.argmax(-1)).float().mean() >= 0.9  # the same top token almost everywhere
    kl = (want.exp() * (want - got)).sum(-1).mean().item()
    assert kl < 0.05, kl
    text = bf16.generate("Explain in one sentence why the sky is blue.", chat=True, max_new_tokens=32, temperature=0.0)
    words = text.split()
    assert len(words) >= 10 and len(set(words)) >= 0.6 * len(words), text  # prose, not a loop
