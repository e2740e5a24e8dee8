"""GGUF files load through the `gguf` package: same logits and tokenizer as transformers' own GGUF load."""

import pytest
import torch
from helpers import make_tokenizer, tiny_hf_model, write_gguf

import blockgen


@pytest.fixture(autouse=True)
def _own_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("BLOCKGEN_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_equals_transformers_gguf_load(tmp_path, arch):
    from transformers import AutoModelForCausalLM

    path = write_gguf(tiny_hf_model(arch), tmp_path / f"tiny-{arch}.gguf", arch)
    reference = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).eval()
    lm = blockgen.load(path, device="cpu")
    ids = torch.randint(0, 200, (2, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(ids).logits
    assert (lm.model(ids) - expected).abs().max().item() <= 1e-5
    text = "The river ran the thin line."
    assert lm.encode(text) == make_tokenizer()(text)["input_ids"]
    assert lm.path.parent == tmp_path / "home" / "converted"


def test_qwen3_gguf_with_its_own_head_dim(tmp_path):
    # head_dim (24) differs from hidden / heads (16): it must come from the GGUF's key_length
    original = tiny_hf_model("qwen3", tie=True)
    path = write_gguf(original, tmp_path / "tiny-qwen3.gguf", "qwen3")
    lm = blockgen.load(path, device="cpu")
    assert lm.config.head_dim == 24 and lm.config.qk_norm and lm.config.tie_word_embeddings
    ids = torch.randint(0, 200, (1, 15), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = original(ids).logits
    assert (lm.model(ids) - expected).abs().max().item() <= 1e-5


def test_conversion_happens_once(tmp_path):
    path = write_gguf(tiny_hf_model("qwen2"), tmp_path / "tiny.gguf", "qwen2")
    first = blockgen.load(path)
    stamp = (first.path / "model.safetensors").stat().st_mtime_ns
    second = blockgen.load(path)
    assert second.path == first.path and (second.path / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in first.path.parent.iterdir() if p.name.startswith(".")]  # no leftover work directories


def test_conversion_is_named_by_content_not_place(tmp_path):
    # a fresh install puts the same wheel's GGUF at a new path with a new mtime: it must reuse the conversion
    import shutil

    from blockgen.loading import converted_dir

    for d in "abc":
        (tmp_path / d).mkdir()
    first = write_gguf(tiny_hf_model("llama"), tmp_path / "a" / "tiny.gguf", "llama")
    second = tmp_path / "b" / "tiny.gguf"
    shutil.copy(first, second)
    made = converted_dir(first)
    stamp = (made / "model.safetensors").stat().st_mtime_ns
    assert converted_dir(second) == made and (made / "model.safetensors").stat().st_mtime_ns == stamp
    assert len(list(made.parent.iterdir())) == 1
    changed = write_gguf(tiny_hf_model("llama", tie=True), tmp_path / "c" / "tiny.gguf", "llama")
    assert converted_dir(changed) != made


def test_a_gguf_is_read_once_and_a_new_converter_converts_again(tmp_path, monkeypatch):
    import hashlib

    from blockgen.loading import conversion_cache, converted_dir

    path = write_gguf(tiny_hf_model("llama"), tmp_path / "tiny.gguf", "llama")
    made = converted_dir(path)
    monkeypatch.setattr(hashlib, "file_digest", lambda *a, **k: pytest.fail("the GGUF was read again"))
    assert converted_dir(path) == made  # its digest is remembered for this (path, size, mtime)
    monkeypatch.setattr(conversion_cache, "CONVERSION_FORMAT", conversion_cache.CONVERSION_FORMAT + 1)
    again = converted_dir(path)
    assert again != made and (again / "config.json").is_file()
