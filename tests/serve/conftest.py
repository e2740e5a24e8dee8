"""A real server on a free loopback port (uvicorn in a thread) over tiny real checkpoints."""

import pytest
from helpers import diffusion_checkpoint, save_checkpoint, tiny_hf_model
from serving import running

import blockgen


@pytest.fixture(scope="session")
def ar_lm(tmp_path_factory):
    """A causal (AR) tiny model with a chat template: rows of any length and max_tokens share a batch."""
    path = save_checkpoint(tiny_hf_model("qwen2", max_position_embeddings=4096), tmp_path_factory.mktemp("ar") / "m")
    return blockgen.load(path, device="cpu")


@pytest.fixture(scope="session")
def bd_lm(tmp_path_factory):
    """A block-diffusion tiny model (block-causal, block size 4)."""
    return blockgen.load(diffusion_checkpoint(tmp_path_factory.mktemp("bd") / "m", max_position_embeddings=1024),
                         device="cpu")


@pytest.fixture
def serve(tmp_path):
    """serve(lm, **create_app options) -> base URL of a server that stops when the test ends (jobs in tmp_path
    unless given)."""
    stack = []

    def start(lm, **options):
        options.setdefault("jobs_dir", tmp_path / "jobs")
        cm = running(lm, **options)
        stack.append(cm)
        return cm.__enter__()

    yield start
    while stack:
        stack.pop().__exit__(None, None, None)


@pytest.fixture(scope="module")
def ar_url(ar_lm, tmp_path_factory):
    """One server over ar_lm (served as "tiny") for a whole module."""
    with running(ar_lm, model_name="tiny", jobs_dir=tmp_path_factory.mktemp("jobs")) as url:
        yield url
