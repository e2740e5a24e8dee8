"""A text-to-image model around any diffusers pipeline: loaded from a local directory (safetensors only, never a
download) or injected as a ready pipeline object; device / dtype chosen like the text model's; per-model defaults
for steps and guidance of the usual fast models, overridable; one seeded draw per call.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from blockgen.errors import ImageModelError, InvalidArgumentError


@dataclass(frozen=True)
class ImageSettings:
    steps: int
    guidance: float
    width: int = 512
    height: int = 512

    def __post_init__(self):
        if not isinstance(self.steps, int) or not 1 <= self.steps <= 200:
            raise InvalidArgumentError("image_steps", self.steps, "must be an int in [1, 200]")
        if not 0.0 <= self.guidance <= 50.0:
            raise InvalidArgumentError("image_guidance", self.guidance, "must be in [0, 50]")
        for name, value in (("image_width", self.width), ("image_height", self.height)):
            if not isinstance(value, int) or not 8 <= value <= 4096 or value % 8:
                raise InvalidArgumentError(name, value, "must be a multiple of 8 in [8, 4096]")


# (substring of the model's name or pipeline class, lower case) -> defaults; the first match wins
_FAST_DEFAULTS = [
    ("sdxl-turbo", ImageSettings(steps=1, guidance=0.0, width=512, height=512)),
    ("sd-turbo", ImageSettings(steps=1, guidance=0.0, width=512, height=512)),
    ("flux.1-schnell", ImageSettings(steps=4, guidance=0.0, width=1024, height=1024)),
    ("flux-schnell", ImageSettings(steps=4, guidance=0.0, width=1024, height=1024)),
    ("sana-sprint", ImageSettings(steps=2, guidance=4.5, width=1024, height=1024)),
    ("sana_sprint", ImageSettings(steps=2, guidance=4.5, width=1024, height=1024)),
    ("sanasprint", ImageSettings(steps=2, guidance=4.5, width=1024, height=1024)),
]
_GENERIC = ImageSettings(steps=25, guidance=7.5, width=512, height=512)


def defaults_for(name: str, pipeline_class: str = "") -> ImageSettings:
    """Steps / guidance / size for a model by its directory name or pipeline class (generic SD values otherwise)."""
    key = f"{name} {pipeline_class}".lower()
    return next((settings for hint, settings in _FAST_DEFAULTS if hint in key), _GENERIC)


def _text2image_classes() -> set[str]:
    from diffusers.pipelines.auto_pipeline import AUTO_TEXT2IMAGE_PIPELINES_MAPPING

    return {cls.__name__ for cls in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.values()}


def _device_dtype(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    from blockgen.runtime import resolve_device

    dev = resolve_device(device)
    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        return dev, torch.float16 if dev.type == "cuda" else torch.float32
    if dtype not in names:
        raise InvalidArgumentError("image_dtype", dtype, f"must be 'auto' or one of {sorted(names)}")
    return dev, names[dtype]


class ImageModel:
    """A loaded text-to-image pipeline, its name and its default settings."""

    def __init__(self, pipeline, name: str, defaults: ImageSettings):
        self.pipeline, self.name, self.defaults = pipeline, name, defaults

    def settings(self, **overrides) -> ImageSettings:
        values = {k: v for k, v in overrides.items() if v is not None}
        base = self.defaults
        return ImageSettings(**{"steps": base.steps, "guidance": base.guidance, "width": base.width,
                                "height": base.height, **values})

    def draw(self, prompt: str, *, seed: int, negative: str | None = None, settings: ImageSettings | None = None):
        """(PIL image, seconds) for one prompt, deterministic for a seed."""
        settings = settings or self.defaults
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidArgumentError("image prompt", prompt, "is empty")
        device = getattr(self.pipeline, "_execution_device", None) or self.pipeline.device
        generator = torch.Generator(device="cpu" if device.type == "mps" else device).manual_seed(seed)
        options = dict(num_inference_steps=settings.steps, guidance_scale=settings.guidance, width=settings.width,
                       height=settings.height, generator=generator)
        if negative and settings.guidance > 1.0:  # a negative prompt only acts through classifier-free guidance
            options["negative_prompt"] = negative
        start = time.perf_counter()
        with torch.inference_mode():
            image = self.pipeline(prompt, **options).images[0]
        return image, time.perf_counter() - start


def load_image_model(source, *, device: str = "auto", dtype: str = "auto", offload: bool = False) -> ImageModel:
    """An ImageModel from a local diffusers directory or a ready text-to-image pipeline object."""
    from diffusers import DiffusionPipeline

    if isinstance(source, DiffusionPipeline):
        cls = type(source).__name__
        if cls not in _text2image_classes():
            raise ImageModelError(cls, "is not a text-to-image pipeline")
        name = getattr(source, "name_or_path", None) or source.config.get("_name_or_path", cls)
        return ImageModel(source, str(name), defaults_for(str(name), cls))
    if not isinstance(source, (str, Path)):
        raise InvalidArgumentError("image_model", source, "must be a directory path or a diffusers pipeline")
    path = Path(source).expanduser()
    index = path / "model_index.json"
    if not path.is_dir():
        raise ImageModelError(path, "no such directory (give a local diffusers text-to-image pipeline directory)")
    try:
        cls = json.loads(index.read_text(encoding="utf-8"))["_class_name"]
    except FileNotFoundError:
        raise ImageModelError(path, "has no model_index.json: not a diffusers pipeline directory") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageModelError(path, f"model_index.json is broken ({exc})") from None
    if cls not in _text2image_classes():
        raise ImageModelError(path, f"{cls} is not a text-to-image pipeline")
    dev, torch_dtype = _device_dtype(device, dtype)
    from diffusers import AutoPipelineForText2Image

    try:
        pipeline = AutoPipelineForText2Image.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                             dtype=torch_dtype)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise ImageModelError(path, f"cannot be loaded ({str(exc).splitlines()[0]})") from None
    if offload and dev.type == "cuda":
        pipeline.enable_model_cpu_offload(device=dev)
    else:
        pipeline.to(dev)
    pipeline.set_progress_bar_config(disable=True)
    return ImageModel(pipeline, path.name, defaults_for(path.name, cls))
