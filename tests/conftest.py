import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
# Tests compare against float32 references with tight tolerances: "auto" means float32 here on every CPU; the tests
# of the automatic choice itself clear this.
os.environ.setdefault("BLOCKGEN_CPU_DTYPE", "float32")
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tokenizer():
    from helpers import make_tokenizer

    return make_tokenizer()


@pytest.fixture(scope="session")
def default_lm():
    """The embedded default model (SmolLM2-135M-Instruct), loaded once for the session."""
    import blockgen

    return blockgen.load("default", device="cpu")


@pytest.fixture(scope="session")
def reference():
    """transformers' own load of the default model's GGUF: the reference the native model is checked against."""
    from transformers import AutoModelForCausalLM

    from blockgen.loading import default_gguf_path

    gguf = default_gguf_path()
    return AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
