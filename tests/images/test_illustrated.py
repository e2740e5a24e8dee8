"""Images between paragraphs: placement, prompts with the character registry, files, exports, captions fed back
into the context, reproducible seeds, resume, and the errors a user can meet."""

from html import escape

import pytest
from helpers import diffusion_checkpoint, tiny_sd_pipeline
from PIL import Image

import blockgen
from blockgen.document import Document
from blockgen.errors import ImageModelError, InvalidArgumentError
from blockgen.images import load_image_model
from blockgen.images.prompts import caption_for, image_filename, image_prompt, registry
from blockgen.memory import EntityTable
from blockgen.planners import place_images, template_outline

FAST = dict(paragraph_words=40, block_size=4, threshold=0.5, window_tokens=64, retrieve=1, summary_tokens=24,
            cleanup="repeats", planner="template", image_steps=2, image_width=32, image_height=32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return blockgen.load(diffusion_checkpoint(tmp_path_factory.mktemp("il") / "bd", max_position_embeddings=1024))


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("il-sd") / "tiny-sd"
    tiny_sd_pipeline(path)
    return path


def test_placement_fills_the_budget_from_the_outline_first():
    outline = template_outline("a lighthouse keeper", 1000, "story")
    placed = place_images(outline, 2)
    assert [i for i, _ in placed.images] == [1, 3] and all(s.after_paragraph == 1 and s.placed
                                                          for _, s in placed.images)
    assert place_images(outline, None) == outline and place_images(placed, 1).images == placed.images[:1]
    with pytest.raises(InvalidArgumentError, match="images"):
        place_images(outline, 6)


def test_prompts_describe_recurring_characters_the_same_way():
    entities = EntityTable()
    entities.update(0, "Mara Quill, the keeper's daughter with a red scarf, climbed the tower. Mara Quill smiled.")
    cast = registry(entities)
    first = image_prompt("Mara Quill at the lamp", "The storm grows.", "storybook", cast)
    second = image_prompt("Mara Quill on the rocks", "Boats come home.", "storybook", cast)
    told = f"Mara Quill: {cast['Mara Quill']}"
    assert told in first and told in second and first.endswith("warm light")
    assert "Mara" not in image_prompt("an empty harbour", "Dawn.", "none", cast)
    assert caption_for("Opening", "Mara lit the lamp. Then rain.", placed=True) == "Mara lit the lamp."
    assert caption_for("The lamp at night", "Mara lit the lamp.", placed=False) == "The lamp at night"
    with pytest.raises(InvalidArgumentError, match="image_style"):
        image_prompt("x", "y", "oil", cast)
    assert image_filename(3, 1, "../../etc/passwd <script>") == "03-s02-etc-passwd-script.png"


def test_an_illustrated_story_end_to_end(tiny, sd_dir, tmp_path):
    events = []
    doc = blockgen.write_story("a lighthouse keeper", words=160, out=tmp_path / "a", model=tiny, images=2,
                               image_model=sd_dir, on_event=events.append, **FAST)
    assert len(doc.images) == 2 and [e.kind for e in events].count("image") == 2
    for record in doc.images:
        path = tmp_path / "a" / record.path
        assert path.is_file() and Image.open(path).size == (32, 32)
        assert record.path.startswith("images/") and record.seed and record.model == "tiny-sd" and record.seconds > 0
        heading = doc.outline.sections[record.section].heading
        assert record.prompt.startswith(heading)  # a placed slot: what to draw is its section and the text around it
        written = " ".join(" ".join((p.summary + " " + p.text).split()) for p in doc.paragraphs)
        assert record.caption and " ".join(record.caption.split()) in written  # (whitespace as str.split sees it)
    md = (tmp_path / "a" / "document.md").read_text()
    html = (tmp_path / "a" / "document.html").read_text()
    for record in doc.images:
        assert f"]({record.path})" in md and f'<img src="{record.path}"' in html
        assert escape(record.caption) in html  # model text is escaped in HTML
    # captions enter the context of the paragraphs that follow
    later = [e.context for e in events if e.kind == "paragraph"][-1]
    assert later["memory"] > 0
    again = blockgen.write_story("a lighthouse keeper", words=160, out=tmp_path / "b", model=tiny, images=2,
                                 image_model=load_image_model(sd_dir), **FAST)
    assert [(r.seed, r.prompt) for r in again.images] == [(r.seed, r.prompt) for r in doc.images]
    assert (tmp_path / "a" / doc.images[0].path).read_bytes() == (tmp_path / "b" / again.images[0].path).read_bytes()


def test_resume_keeps_drawn_images(tiny, sd_dir, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_first_image(event):
        if event.kind == "image":
            raise Stop

    with pytest.raises(Stop):
        blockgen.write_story("a lighthouse keeper", words=160, out=tmp_path, model=tiny, images=2,
                             image_model=sd_dir, on_event=stop_after_first_image, **FAST)
    saved = Document.load(tmp_path / "state.json")
    assert len(saved.images) == 1
    doc = blockgen.write_story("a lighthouse keeper", words=160, out=tmp_path, model=tiny, images=2,
                               image_model=sd_dir, resume=True, **FAST)
    assert len(doc.images) == 2 and doc.images[0] == saved.images[0]


def test_images_without_a_model_or_with_a_bad_one(tiny, tmp_path):
    with pytest.raises(InvalidArgumentError, match="image_model.*--image-model"):
        blockgen.write_story("a keeper", words=100, out=tmp_path / "x", model=tiny, images=1, **FAST)
    with pytest.raises(ImageModelError, match="no such directory"):
        blockgen.write_story("a keeper", words=100, out=tmp_path / "y", model=tiny, images=1,
                             image_model=tmp_path / "none", **FAST)
    with pytest.raises(InvalidArgumentError, match="image_width"):
        blockgen.write_story("a keeper", words=100, out=tmp_path / "z", model=tiny, images=1,
                             **{**FAST, "image_width": 30})


@pytest.mark.slow
def test_illustrated_story_on_the_default_text_model(sd_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "examples" / "illustrated_story.py"
    result = subprocess.run([sys.executable, str(script), str(sd_dir), str(tmp_path), "150", "2"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    doc = Document.load(tmp_path / "state.json")
    assert doc.status == "done" and len(doc.images) == 2 and doc.request.model == "default"
    assert all((tmp_path / im.path).is_file() for im in doc.images)
    assert 0.5 * 150 <= doc.words <= 1.5 * 150
    html = (tmp_path / "document.html").read_text()
    assert html.count("<figure>") == 2 and "<script>" not in html
    md = (tmp_path / "document.md").read_text()
    assert md.startswith("# ") and all(f"## {s.heading}" in md for s in doc.outline.sections)
    sentences = [s for p in doc.paragraphs for s in p.text.split(". ")]
    assert len(sentences) == len(set(sentences))  # no sentence written twice
