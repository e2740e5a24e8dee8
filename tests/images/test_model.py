"""The image model: a diffusers text-to-image pipeline loaded from a local directory (or injected), seeded draws,
per-model defaults, and typed errors for directories and pipelines that cannot be used."""

import json

import numpy as np
import pytest
from helpers import tiny_sd_pipeline

from blockgen.errors import ImageModelError, InvalidArgumentError
from blockgen.images import ImageSettings, defaults_for, load_image_model

SMALL = dict(steps=2, guidance=0.0, width=32, height=32)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "tiny-sd"
    tiny_sd_pipeline(path)
    return path


def test_loads_from_a_directory_and_draws_reproducibly(sd_dir):
    model = load_image_model(sd_dir, device="cpu")
    assert model.name == "tiny-sd" and type(model.pipeline).__name__ == "StableDiffusionPipeline"
    settings = model.settings(**SMALL)
    first, seconds = model.draw("a red lighthouse", seed=7, settings=settings)
    again, _ = model.draw("a red lighthouse", seed=7, settings=settings)
    other, _ = model.draw("a red lighthouse", seed=8, settings=settings)
    assert first.size == (32, 32) and seconds > 0
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    with pytest.raises(InvalidArgumentError, match="image prompt"):
        model.draw(" ", seed=1, settings=settings)


def test_an_injected_pipeline_is_used_as_is():
    pipe = tiny_sd_pipeline()
    model = load_image_model(pipe)
    assert model.pipeline is pipe
    image, _ = model.draw("a boat", seed=1, settings=model.settings(**SMALL))
    assert image.size == (32, 32)


def test_defaults_of_the_usual_fast_models():
    assert defaults_for("sd-turbo") == ImageSettings(steps=1, guidance=0.0, width=512, height=512)
    assert defaults_for("stabilityai/sdxl-turbo").steps == 1
    assert defaults_for("FLUX.1-schnell", "FluxPipeline") == ImageSettings(4, 0.0, 1024, 1024)
    assert defaults_for("Sana-Sprint-1.6B", "SanaSprintPipeline").steps == 2
    assert defaults_for("my-model", "StableDiffusionPipeline").steps == 25
    with pytest.raises(InvalidArgumentError, match="image_width"):
        ImageSettings(steps=1, guidance=0.0, width=30, height=32)
    with pytest.raises(InvalidArgumentError, match="image_steps"):
        ImageSettings(steps=0, guidance=0.0)


def test_directories_and_pipelines_that_cannot_be_used(tmp_path, sd_dir):
    with pytest.raises(ImageModelError, match="no such directory"):
        load_image_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageModelError, match="model_index.json"):
        load_image_model(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(ImageModelError, match="broken"):
        load_image_model(broken)
    img2img = tmp_path / "img2img"
    tiny_sd_pipeline(img2img)
    index = json.loads((img2img / "model_index.json").read_text())
    (img2img / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionImg2ImgPipeline"}))
    with pytest.raises(ImageModelError, match="not a text-to-image pipeline"):
        load_image_model(img2img)
    pickled = tmp_path / "pickled"
    tiny_sd_pipeline(pickled, safe=False)
    with pytest.raises(ImageModelError, match="cannot be loaded"):
        load_image_model(pickled)  # .bin weights only: refused, never unpickled
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unconditional = DDPMPipeline(unet=UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4,
                                                  down_block_types=("DownBlock2D",) * 2,
                                                  up_block_types=("UpBlock2D",) * 2), scheduler=DDPMScheduler())
    with pytest.raises(ImageModelError, match="not a text-to-image"):
        load_image_model(unconditional)
    with pytest.raises(InvalidArgumentError, match="image_dtype"):
        load_image_model(sd_dir, dtype="int8")
