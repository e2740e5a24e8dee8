"""Memory of finished blocks: summary tokens, vector retrieval, an entity table. Installed as `blockgen.memory`."""

from blockgen.memory.entities import Entity, EntityTable
from blockgen.memory.store import BlockMemory, MemoryItem
from blockgen.memory.summary import (
    Summary,
    abstractive_summary,
    extractive_summary,
    position_weights,
    split_sentences,
)

__all__ = [
    "BlockMemory",
    "Entity",
    "EntityTable",
    "MemoryItem",
    "Summary",
    "abstractive_summary",
    "extractive_summary",
    "position_weights",
    "split_sentences",
]
