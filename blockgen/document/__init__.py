"""Documents: their state (saved after every block, resumable) and their exports."""

from blockgen.document.export import export_all, to_html, to_markdown
from blockgen.document.state import Block, Document, ImageRecord, Request, writable_directory

__all__ = ["Block", "Document", "ImageRecord", "Request", "export_all", "to_html", "to_markdown",
           "writable_directory"]
