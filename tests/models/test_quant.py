"""Weight-only int8 layers: exact against their dequantized weights, close to the float model, a clear error for a
bad mode, and the quantized default still writes prose."""

import pytest
import torch
import torch.nn.functional as F
from helpers import save_checkpoint, tiny_hf_model

import blockgen
from blockgen.errors import InvalidArgumentError
from blockgen.models.quant import Int8Linear, int8_rows


def test_rows_round_trip_within_half_a_step():
    w = torch.randn(48, 96) * torch.linspace(0.01, 3.0, 48)[:, None]  # rows of very different scales
    q, scale = int8_rows(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_equals_its_dequantized_matmul(dtype):
    linear = torch.nn.Linear(64, 40, bias=True).to(dtype)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(3, 5, 64, dtype=dtype)
    got = layer(x)
    assert got.shape == (3, 5, 40) and got.dtype == dtype
    want = F.linear(x.float(), layer.dequantized(), linear.bias.float())
    tol = 1e-4 if dtype == torch.float32 else 3e-2 * want.abs().max().item()
    assert (got.float() - want).abs().max().item() <= tol
    # and close to the float layer it came from
    assert (got.float() - linear(x).float()).abs().max().item() <= 0.05 * want.abs().max().item()


@pytest.mark.parametrize("tie", [False, True])
def test_a_quantized_model_stays_close_and_generates(tmp_path, tie):
    path = save_checkpoint(tiny_hf_model("llama", tie=tie), tmp_path / "m")
    full = blockgen.load(path, device="cpu", dtype="float32")
    int8 = blockgen.load(path, device="cpu", dtype="float32", quantize="int8")
    attention, mlp = int8.model.model.layers[0].self_attn, int8.model.model.layers[0].mlp
    assert int8.quantize == "int8" and isinstance(attention.qkv_proj, Int8Linear) and isinstance(mlp.down_proj, Int8Linear)
    ids = torch.randint(0, 128, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = full.model(ids), int8.model(ids)
    assert (got - want).abs().max().item() <= 0.1 * want.abs().max().item()
    if tie:  # the head's quantized copy leaves the embedding table in full precision
        assert int8.model.model.embed_tokens.weight.dtype == torch.float32
    out = int8.generate_results(ids[0].tolist(), max_new_tokens=6)[0]
    assert len(out.tokens) == 6


def test_bad_quantize_mode_is_refused(tmp_path):
    path = save_checkpoint(tiny_hf_model("llama"), tmp_path / "m")
    with pytest.raises(InvalidArgumentError, match="quantize"):
        blockgen.load(path, device="cpu", quantize="int3")


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_the_quantized_default_keeps_its_next_token_choices(default_lm, mode):
    """The parity tolerance of the option on the embedded default: the same top token at >= 85% of positions and a
    small KL divergence from float32; greedy text is still prose."""
    int8 = blockgen.load("default-ar", device="cpu", dtype="float32", quantize=mode)
    ids = default_lm.tokenizer("The moon pulls the ocean, and twice a day the tide rises along the coast because",
                               return_tensors="pt").input_ids
    with torch.no_grad():
        want = torch.log_softmax(default_lm.model(ids).float(), -1)
        got = torch.log_softmax(int8.model(ids).float(), -1)
    assert (want.argmax(-1) == got.argmax(-1)).float().mean() >= 0.85
    kl = (want.exp() * (want - got)).sum(-1).mean().item()
    assert kl < 0.1, kl
    print(f"{mode}: top-1 agreement {(want.argmax(-1) == got.argmax(-1)).float().mean():.3f}, KL {kl:.4f}")
    text = int8.generate("Explain in one sentence why the sky is blue.", chat=True, max_new_tokens=32, temperature=0.0)
    words = text.split()
    assert len(words) >= 10 and len(set(words)) >= 0.6 * len(words), text


def test_auto_quantizes_on_cpu_in_bfloat16_only(tmp_path, monkeypatch):
    from blockgen.runtime import auto_quantize

    cpu = torch.device("cpu")
    assert auto_quantize(cpu, torch.bfloat16) == "int4" and auto_quantize(cpu, torch.float32) is None
    assert auto_quantize(torch.device("cuda"), torch.bfloat16) is None
    path = save_checkpoint(tiny_hf_model("llama"), tmp_path / "m")
    assert blockgen.load(path, device="cpu", dtype="bfloat16").quantize == "int4"
    monkeypatch.setattr("blockgen.runtime._has_kernel", lambda name: "int4" not in name)  # an older PyTorch
    assert auto_quantize(cpu, torch.bfloat16) == "int8"
    assert blockgen.load(path, device="cpu", dtype="bfloat16", quantize=None).quantize is None
    assert blockgen.load(path, device="cpu", dtype="float32").quantize is None


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])  # qwen2: q/k/v carry biases; qwen3: q/k norms
def test_fused_projections_equal_the_layers_quantized_apart(tmp_path, arch):
    """q/k/v (and gate/up) become one int8 layer: one kernel call instead of three, the same numbers (per-row scales
    do not depend on the other rows)."""
    path = save_checkpoint(tiny_hf_model(arch), tmp_path / "m")
    full = blockgen.load(path, device="cpu", dtype="float32", pack=False)
    int8 = blockgen.load(path, device="cpu", dtype="float32", quantize="int8")
    x = torch.randn(1, 3, full.config.hidden_size, generator=torch.Generator().manual_seed(0))
    attention, fused = full.model.model.layers[1].self_attn, int8.model.model.layers[1].self_attn
    assert not hasattr(fused, "q_proj") and not hasattr(int8.model.model.layers[1].mlp, "gate_proj")
    apart = torch.cat([Int8Linear.from_linear(getattr(attention, n))(x) for n in ("q_proj", "k_proj", "v_proj")], -1)
    torch.testing.assert_close(fused.qkv_proj(x), apart, atol=1e-5, rtol=1e-5)
    mlp, fused_mlp = full.model.model.layers[1].mlp, int8.model.model.layers[1].mlp
    apart = torch.cat([Int8Linear.from_linear(mlp.gate_proj)(x), Int8Linear.from_linear(mlp.up_proj)(x)], -1)
    torch.testing.assert_close(fused_mlp.gate_up_proj(x), apart, atol=1e-5, rtol=1e-5)
    # and the whole model: fused, as the layers quantized apart (the path with three projections and two rotations)
    for layer in int8.model.model.layers:
        attn = layer.self_attn
        weights = attn.qkv_proj.dequantized().split(attn.qkv_sizes)
        biases = attn.qkv_proj.bias.split(attn.qkv_sizes) if attn.qkv_proj.bias is not None else (None,) * 3
        for name, w, bias in zip(("q_proj", "k_proj", "v_proj"), weights, biases):
            linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
            linear.weight.data, linear.bias = w, None if bias is None else torch.nn.Parameter(bias)
            setattr(attn, name, Int8Linear.from_linear(linear))
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fused_logits = int8.model(ids)
        for layer in int8.model.model.layers:
            layer.self_attn.qkv_proj = None
        apart_logits = int8.model(ids)
    torch.testing.assert_close(fused_logits, apart_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_linear_equals_its_dequantized_matmul_and_keeps_q4_blocks(dtype):
    """Groups of 32 with a scale and a minimum: weights already on such a grid (as the GGUF's Q4_1 blocks are) come
    back exactly, up to the scale's rounding; the kernel and the dense path (prefills) agree."""
    from blockgen.models.quant import Int4Linear

    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (48, 64), generator=gen).float()
    scale, low = torch.rand(48, 2, 1, generator=gen) * 0.1 + 0.01, torch.randn(48, 2, 1, generator=gen) * 0.1
    weight = (codes.reshape(48, 2, 32) * scale + low).reshape(48, 64)
    weight[:, 0::32] = (low[..., 0])  # each group holds its minimum and its maximum, as a Q4_1 block does
    weight[:, 1::32] = (15 * scale + low)[..., 0]
    layer = Int4Linear(weight.to(dtype), torch.randn(48, generator=gen).to(dtype))
    tol = 1e-5 if dtype == torch.float32 else 0.02
    assert (layer.dequantized() - weight).abs().max() <= tol * 4
    for rows in (1, 3, 120):  # the int4 kernel, then the dense path (prefills)
        x = torch.randn(rows, 64, generator=gen).to(dtype)
        want = x.float() @ layer.dequantized().T + layer.bias.float()
        assert (layer(x).float() - want).abs().max() <= tol * 10 * want.abs().max()


def test_an_int4_model_stays_close_and_generates(tmp_path):
    path = save_checkpoint(tiny_hf_model("llama"), tmp_path / "m")
    full = blockgen.load(path, device="cpu", dtype="float32")
    int4 = blockgen.load(path, device="cpu", dtype="float32", quantize="int4")
    from blockgen.models.quant import Int4Linear

    assert int4.quantize == "int4" and isinstance(int4.model.model.layers[0].self_attn.qkv_proj, Int4Linear)
    assert isinstance(int4.model.head_kernel, Int8Linear)  # the head stays 8-bit
    ids = torch.randint(0, 128, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = full.model(ids), int4.model(ids)
    assert (got - want).abs().max().item() <= 0.25 * want.abs().max().item()
    assert len(int4.generate_results(ids[0].tolist(), max_new_tokens=6)[0].tokens) == 6


# ---- float32 layers packed for oneDNN (what `load` does on CPU in float32)
needs_pack = pytest.mark.skipif(not __import__("blockgen.models.quant", fromlist=["can_pack"]).can_pack(),
                                reason="this PyTorch lacks the oneDNN linear kernels")


@needs_pack
@pytest.mark.parametrize("rows", [1, 3, 17])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_is_the_same_layer(rows, bias):
    from blockgen.models.quant import PackedLinear

    linear = torch.nn.Linear(64, 40, bias=bias)
    layer = PackedLinear(linear.weight, linear.bias)
    assert torch.equal(layer.dequantized(), linear.weight.detach())  # the same weights, laid out anew
    x = torch.randn(2, rows, 64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), linear(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer(x.bfloat16()), linear(x.bfloat16().float()), atol=1e-5, rtol=1e-5)


@needs_pack
@pytest.mark.parametrize("tie", [False, True])
def test_load_packs_a_float32_model_on_cpu_and_it_decodes_as_before(tmp_path, tie):
    from blockgen.models.quant import PackedLinear

    path = save_checkpoint(tiny_hf_model("qwen2", tie=tie), tmp_path / "m")  # qwen2: q/k/v with biases
    packed = blockgen.load(path, device="cpu", dtype="float32")
    plain = blockgen.load(path, device="cpu", dtype="float32", pack=False)
    layer = packed.model.model.layers[0]
    assert packed.packed and not plain.packed and packed.quantize is None
    assert isinstance(layer.self_attn.qkv_proj, PackedLinear) and isinstance(layer.mlp.gate_up_proj, PackedLinear)
    assert isinstance(layer.mlp.down_proj, PackedLinear) and isinstance(packed.model.head_kernel, PackedLinear)
    ids = torch.randint(0, 128, (3, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(packed.model(ids), plain.model(ids), atol=1e-4, rtol=1e-4)
    tokens = [[r.tokens for r in lm.generate_results(ids.tolist(), max_new_tokens=8)] for lm in (packed, plain)]
    assert tokens[0] == tokens[1]  # greedy, a batch of three


def test_packing_is_refused_where_it_does_not_apply(tmp_path):
    path = save_checkpoint(tiny_hf_model("llama"), tmp_path / "m")
    assert not blockgen.load(path, device="cpu", dtype="bfloat16", quantize=None).packed  # auto: float32 only
    assert not blockgen.load(path, device="cpu", dtype="float32", quantize="int8").packed
    with pytest.raises(InvalidArgumentError, match="pack"):
        blockgen.load(path, device="cpu", dtype="float32", quantize="int8", pack=True)
    with pytest.raises(InvalidArgumentError, match="pack.*bfloat16"):
        blockgen.load(path, device="cpu", dtype="bfloat16", quantize=None, pack=True)


@needs_pack
def test_a_packed_model_refuses_to_train(tmp_path):
    """Packed weights are buffers a kernel without backward reads: a training step would leave them as they were
    without a word, so it is refused, naming the way out."""
    lm = blockgen.load(save_checkpoint(tiny_hf_model("llama"), tmp_path / "m"), device="cpu", dtype="float32")
    lm.model.requires_grad_(True)
    with pytest.raises(InvalidArgumentError, match="pack=False"):
        lm.model(torch.tensor([[1, 2, 3]]))
    with torch.no_grad():
        assert lm.model(torch.tensor([[1, 2, 3]])).shape[:2] == (1, 3)
