"""A checkpoint under LLaDA-8B's weight names loads and equals the same weights under LLaMA names."""

import torch
from helpers import save_checkpoint, tiny_hf_model, write_llada_checkpoint

import blockgen
from blockgen.models import Attention, AttentionKind


def test_llada_names_equal_llama_names_bidirectional(tmp_path):
    reference = tiny_hf_model("llama", num_key_value_heads=4)
    llada = blockgen.load(write_llada_checkpoint(reference, tmp_path / "llada"), device="cpu")
    llama = blockgen.load(save_checkpoint(reference, tmp_path / "llama"), device="cpu")
    assert llada.config.architecture == "llada"
    assert llada.family.attention is AttentionKind.BIDIRECTIONAL
    assert llada.family.logit_shift is False
    assert llada.family.mask_token_id == llada.tokenizer.convert_tokens_to_ids("<|mask|>")
    ids = torch.randint(0, 128, (2, 17), generator=torch.Generator().manual_seed(0))
    bidirectional = Attention.bidirectional()
    got, expected = llada.model(ids, attention=bidirectional), llama.model(ids, attention=bidirectional)
    assert torch.equal(got, expected)
    # and the causal view equals transformers' own model on those weights
    with torch.no_grad():
        hf = reference(ids).logits
    assert (llada.model(ids, attention=Attention.causal()) - hf).abs().max() <= 1e-4
