"""The outline latent: one sentence embedding per outline node (the embedder of `blockgen.loading.embedder`)."""

from __future__ import annotations

from blockgen.loading.embedder import embed


def with_latent(outline, embedder=None):
    """A copy of the outline carrying one embedding per node (title, then each section)."""
    vectors = embed(outline.node_texts(), embedder)
    return outline.model_copy(update={"latent": vectors.tolist()})
