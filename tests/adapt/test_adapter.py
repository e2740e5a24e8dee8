"""Adapter directories: LoRA (peft) weights + the mask embedding, saved in pieces, loaded and merged by blockgen.load."""

import json

import pytest
import torch

import blockgen
from blockgen.errors import CheckpointNotFoundError, ConfigError, CorruptCheckpointError, TensorError
from blockgen.loading import adapter as adapter_io


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from helpers import save_checkpoint, tiny_hf_model

    return save_checkpoint(tiny_hf_model(), tmp_path_factory.mktemp("base"))


def _adapter(base, directory, piece_bytes=15 << 20, seed=1):
    """A LoRA adapter with random (non-zero) B matrices and a random mask row; returns the unmerged model's logits."""
    lm = blockgen.load(base, device="cpu", pack=False)  # plain layers: LoRA wraps them
    model = adapter_io.add_lora(lm.model, 4, 8)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    mask_id = lm.tokenizer.convert_tokens_to_ids("<|mask|>")
    mask_row = torch.randn(lm.config.hidden_size)
    tensors = adapter_io.lora_state(model)
    tensors[adapter_io.MASK_EMBEDDING] = mask_row
    adapter_io.save_adapter(directory, {
        "base": str(base), "lora_rank": 4, "lora_alpha": 8, "targets": list(adapter_io.LORA_TARGETS),
        "mask_token": "<|mask|>",
        "blockgen": {"attention": "block_causal", "logit_shift": True, "block_size": 4, "mask_token_id": mask_id},
        "training": {"steps": 0},
    }, tensors, max_piece_bytes=piece_bytes)
    ids = torch.tensor([[5, 9, mask_id, mask_id, 40, 41]])
    with torch.no_grad():
        model.model.embed_tokens.weight[mask_id] = mask_row
        want = model(ids)
    return ids, want


def test_adapter_loads_merged_and_equal(base, tmp_path):
    ids, want = _adapter(base, tmp_path / "adapter")
    lm = blockgen.load(tmp_path / "adapter", device="cpu")
    assert lm.family.attention.value == "block_causal" and lm.family.block_size == 4 and lm.family.logit_shift
    assert lm.path == tmp_path / "adapter"
    assert not any("lora" in name for name, _ in lm.model.named_parameters())  # merged: the base's speed
    torch.testing.assert_close(lm.model(ids), want, atol=1e-5, rtol=1e-5)
    text = lm.generate("abc", max_new_tokens=8, block_size=4)
    assert isinstance(text, str)


def test_adapter_in_pieces(base, tmp_path):
    ids, want = _adapter(base, tmp_path / "adapter", piece_bytes=4096)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert len(config["files"]) > 3
    assert all((tmp_path / "adapter" / f).stat().st_size <= 4096 + 1024 for f in config["files"])
    torch.testing.assert_close(blockgen.load(tmp_path / "adapter", device="cpu").model(ids), want, atol=1e-5, rtol=1e-5)


def test_adapter_bad_inputs(base, tmp_path):
    directory = tmp_path / "adapter"
    _adapter(base, directory, piece_bytes=4096)
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())

    (directory / config["files"][1]).rename(directory / "moved")
    with pytest.raises(CheckpointNotFoundError, match=config["files"][1]):
        blockgen.load(directory, device="cpu")
    (directory / "moved").rename(directory / config["files"][1])

    (directory / config["files"][0]).write_bytes(b"\x00" * 20)
    with pytest.raises(CorruptCheckpointError, match=config["files"][0]):
        blockgen.load(directory, device="cpu")

    _adapter(base, directory)
    good = json.loads(config_path.read_text())
    for field, value, error, message in (("lora_rank", "4", ConfigError, "lora_rank"),
                                         ("files", ["../x.safetensors"], ConfigError, "files"),
                                         ("lora_rank", 8, TensorError, "shape")):
        config_path.write_text(json.dumps(dict(good, **{field: value})))
        with pytest.raises(error, match=message):
            blockgen.load(directory, device="cpu")
    config_path.write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match="adapter_config.json"):
        blockgen.load(directory, device="cpu")


def test_a_quantized_base_keeps_the_adapter_exact_beside_it(base, tmp_path):
    """With int4 weights the adapter stays a low-rank term beside the rounded base: the adapter's effect on the
    logits comes through closer than when it is merged first and rounded with the base (as it once was)."""
    from blockgen.models.quant import WithLowRank, quantize_decoder

    ids, want = _adapter(base, tmp_path / "adapter")
    with torch.no_grad():
        effect = want - blockgen.load(base, device="cpu", dtype="float32", quantize=None).model(ids)
        quantized_base = blockgen.load(base, device="cpu", dtype="bfloat16", quantize="int4").model(ids).float()
        kept = blockgen.load(tmp_path / "adapter", device="cpu", dtype="bfloat16", quantize="int4")
        assert any(isinstance(m, WithLowRank) for m in kept.model.modules())
        merged = blockgen.load(tmp_path / "adapter", device="cpu", dtype="bfloat16", quantize=None)
        quantize_decoder(merged.model, "int4")
        kept_error = ((kept.model(ids).float() - quantized_base) - effect).abs().mean()
        merged_error = ((merged.model(ids).float() - quantized_base) - effect).abs().mean()
    assert kept_error < 0.8 * merged_error, (kept_error, merged_error)
    assert isinstance(kept.generate("abc", max_new_tokens=8, block_size=4), str)
