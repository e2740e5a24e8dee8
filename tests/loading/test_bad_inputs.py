"""Each bad checkpoint raises a typed error naming the file, tensor or field; pickles are never opened."""

import json
import pathlib
import pickle

import pytest
import torch
from helpers import save_checkpoint, tiny_hf_model
from safetensors.torch import load_file, save_file

import blockgen
from blockgen.errors import (
    CheckpointNotFoundError,
    ConfigError,
    CorruptCheckpointError,
    InvalidArgumentError,
    TensorError,
    UnsafeCheckpointError,
    UnsupportedArchitectureError,
)


@pytest.fixture
def ckpt(tmp_path):
    return save_checkpoint(tiny_hf_model("llama"), tmp_path / "ckpt")


def _edit_config(directory, **changes):
    path = directory / "config.json"
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))


class _Trap:
    """Unpickling this touches a file: proof that a checkpoint was (or was not) unpickled."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.sentinel),))


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does-not-exist"):
        blockgen.load(tmp_path / "does-not-exist")


def test_unknown_architecture(ckpt):
    _edit_config(ckpt, model_type="gpt2")
    with pytest.raises(UnsupportedArchitectureError) as info:
        blockgen.load(ckpt)
    assert info.value.field == "model_type" and "gpt2" in str(info.value)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.ckpt"])
def test_pickle_checkpoint_refused_never_unpickled(tmp_path, ckpt, name):
    sentinel = tmp_path / "unpickled"
    for file in ckpt.glob("*.safetensors"):
        file.unlink()
    (ckpt / name).write_bytes(pickle.dumps({"model.embed_tokens.weight": _Trap(sentinel)}))
    with pytest.raises(UnsafeCheckpointError, match=name):
        blockgen.load(ckpt)
    with pytest.raises(UnsafeCheckpointError, match=name):
        blockgen.load(ckpt / name)
    assert not sentinel.exists()


def test_no_weights_at_all(ckpt):
    for file in ckpt.glob("*.safetensors"):
        file.unlink()
    with pytest.raises(CheckpointNotFoundError, match="safetensors"):
        blockgen.load(ckpt)


def test_corrupt_safetensors(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CorruptCheckpointError, match="model.safetensors"):
        blockgen.load(ckpt)


def test_truncated_safetensors(ckpt):
    path = ckpt / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="model.safetensors"):
        blockgen.load(ckpt)


def test_tensor_with_wrong_shape(ckpt):
    path = ckpt / "model.safetensors"
    tensors = load_file(path)
    tensors["model.layers.1.mlp.up_proj.weight"] = torch.zeros(95, 64)
    save_file(tensors, path)
    with pytest.raises(TensorError) as info:
        blockgen.load(ckpt)
    assert info.value.tensor == "model.layers.1.mlp.up_proj.weight" and "(95, 64)" in str(info.value)


def test_missing_and_unexpected_tensors(ckpt):
    path = ckpt / "model.safetensors"
    tensors = load_file(path)
    del tensors["model.layers.0.self_attn.k_proj.weight"]
    save_file(tensors, path)
    with pytest.raises(TensorError, match="missing") as info:
        blockgen.load(ckpt)
    assert info.value.tensor == "model.layers.0.self_attn.k_proj.weight"
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(32, 64)
    tensors["model.layers.7.mlp.up_proj.weight"] = torch.zeros(96, 64)
    save_file(tensors, path)
    with pytest.raises(TensorError, match="not part of") as info:
        blockgen.load(ckpt)
    assert info.value.tensor == "model.layers.7.mlp.up_proj.weight"


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "rms_norm_eps", "model_type"])
def test_config_missing_a_field(ckpt, field):
    _edit_config(ckpt, **{field: None})
    with pytest.raises(ConfigError) as info:
        blockgen.load(ckpt)
    assert info.value.field == field and "config.json" in str(info.value)


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"use_sliding_window": True}, "use_sliding_window"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}}, "rope_parameters"),
    ],
)
def test_config_with_unsupported_settings(ckpt, changes, field):
    _edit_config(ckpt, **changes)
    with pytest.raises(ConfigError) as info:
        blockgen.load(ckpt)
    assert info.value.field == field


def test_config_not_json_and_config_missing(ckpt):
    (ckpt / "config.json").write_text("{ nope")
    with pytest.raises(CorruptCheckpointError, match="config.json"):
        blockgen.load(ckpt)
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointNotFoundError, match="config.json"):
        blockgen.load(ckpt)


def test_index_naming_a_missing_shard(tmp_path):
    ckpt = save_checkpoint(tiny_hf_model("llama"), tmp_path / "sharded", max_shard_size="20KB")
    shard = sorted(ckpt.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointNotFoundError, match=shard.name):
        blockgen.load(ckpt)
    (ckpt / "model.safetensors.index.json").write_text("[]")
    with pytest.raises(CorruptCheckpointError, match="index"):
        blockgen.load(ckpt)


def test_missing_tokenizer(ckpt):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (ckpt / name).unlink()
    with pytest.raises(CheckpointNotFoundError, match="tokenizer"):
        blockgen.load(ckpt)


@pytest.mark.parametrize(
    "kwargs,parameter",
    [({"device": "tpu:banana"}, "device"), ({"dtype": "int8"}, "dtype"), ({"dtype": torch.int8}, "dtype"),
     ({"ntk_factor": 0.0}, "ntk_factor")],
)
def test_bad_load_arguments(ckpt, kwargs, parameter):
    with pytest.raises(InvalidArgumentError) as info:
        blockgen.load(ckpt, **kwargs)
    assert info.value.parameter == parameter


def test_cuda_requested_without_cuda(ckpt):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InvalidArgumentError, match="CUDA"):
        blockgen.load(ckpt, device="cuda")


def test_corrupt_and_foreign_gguf(tmp_path):
    import gguf

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 20)
    with pytest.raises(CorruptCheckpointError, match="broken.gguf"):
        blockgen.load(bad)
    foreign = tmp_path / "foreign.gguf"
    writer = gguf.GGUFWriter(str(foreign), "gpt2")
    writer.add_tensor("token_embd.weight", torch.zeros(8, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedArchitectureError) as info:
        blockgen.load(foreign)
    assert info.value.field == "general.architecture"
