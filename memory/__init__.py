"""Memory of written paragraphs: summary tokens, vector retrieval, an entity table. Installed as `blockgen.memory`."""

from blockgen.memory.entities import Entity, EntityTable
from blockgen.memory.store import MemoryItem, ParagraphMemory
from blockgen.memory.summary import (
    Summary,
    abstractive_summary,
    extractive_summary,
    position_weights,
    split_sentences,
)

__all__ = [
    "Entity",
    "EntityTable",
    "MemoryItem",
    "ParagraphMemory",
    "Summary",
    "abstractive_summary",
    "extractive_summary",
    "position_weights",
    "split_sentences",
]
