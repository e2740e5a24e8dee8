"""Images: a diffusers text-to-image pipeline drawn between paragraphs."""

from blockgen.images.model import ImageModel, ImageSettings, defaults_for, load_image_model

__all__ = ["ImageModel", "ImageSettings", "defaults_for", "load_image_model"]
