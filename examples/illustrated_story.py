"""Write a short illustrated story: the embedded default text model, and a diffusers text-to-image pipeline from a
local directory (for example an sd-turbo download) drawn between paragraphs.

Usage: python examples/illustrated_story.py IMAGE_MODEL_DIR [out_dir] [words] [images]
"""

import sys
import tempfile

import blockgen


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    image_model = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="blockgen-illustrated-")
    words = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    images = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    extra = dict(image_steps=2, image_width=64, image_height=64) if "tiny" in image_model else {}
    doc = blockgen.write_story("a lighthouse keeper's daughter relights the lamp in a storm", words=words, out=out,
                               images=images, image_model=image_model, image_style="storybook", **extra)
    for image in doc.images:
        print(f"{image.path}: seed {image.seed}, {image.seconds:.2f}s, prompt: {image.prompt}")
    print(f"{doc.words} words, {len(doc.images)} images -> {out}/document.html")


if __name__ == "__main__":
    main()
