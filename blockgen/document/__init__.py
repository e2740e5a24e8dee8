"""Documents: their state (saved after every paragraph, resumable) and their exports."""

from blockgen.document.export import export_all, to_html, to_markdown
from blockgen.document.state import Document, ImageRecord, Paragraph, Request, writable_directory

__all__ = ["Document", "ImageRecord", "Paragraph", "Request", "export_all", "to_html", "to_markdown",
           "writable_directory"]
