"""A vector memory of written paragraphs: embeddings, summaries, and cosine top-k retrieval."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blockgen.errors import InvalidArgumentError
from blockgen.loading.embedder import embed


@dataclass
class MemoryItem:
    index: int  # order in which the paragraph was written
    section: int
    text: str
    summary: str


class ParagraphMemory:
    """Every written paragraph with its unit-norm embedding; retrieval by cosine similarity to a query vector."""

    def __init__(self, embedder=None):
        self.embedder = embedder
        self.items: list[MemoryItem] = []
        self._vectors: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, text: str, *, section: int, summary: str = "", vector: torch.Tensor | None = None) -> MemoryItem:
        if vector is None:
            vector = embed([text], self.embedder)[0]
        item = MemoryItem(len(self.items), section, text, summary)
        self.items.append(item)
        self._vectors.append(torch.nn.functional.normalize(vector.float(), dim=-1))
        return item

    def vectors(self) -> torch.Tensor:
        return torch.stack(self._vectors) if self._vectors else torch.empty(0, 0)

    def similarity(self, query: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of the query to every stored paragraph, in write order."""
        if not self.items:
            return torch.empty(0)
        return self.vectors() @ torch.nn.functional.normalize(query.float(), dim=-1)

    def retrieve(self, query: torch.Tensor, k: int = 3, *, exclude_last: int = 0) -> list[tuple[MemoryItem, float]]:
        """The k paragraphs most similar to `query`, best first, leaving out the `exclude_last` most recent ones (they
        are in the context verbatim already)."""
        if not isinstance(k, int) or k < 0:
            raise InvalidArgumentError("k", k, "must be an int >= 0")
        pool = len(self.items) - max(0, exclude_last)
        if k == 0 or pool <= 0:
            return []
        scores = self.similarity(query)[:pool]
        top = torch.topk(scores, min(k, pool))
        return [(self.items[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]
