"""A small generated ImageNet-layout folder, with the bad files a real crawl contains."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 220)]


def _image(colour: tuple[int, int, int], index: int, size: int) -> Image.Image:
    image = Image.new("RGB", (size + index % 3, size), (128, 128, 128))
    offset = index % 4
    image.paste(colour, (offset, offset, offset + size // 2, offset + size // 2))
    return image


def make_image_folder(
    root: Path, per_class: int = 8, val_per_class: int = 3, size: int = 20, bad: bool = False
) -> Path:
    """``root/{train,val}/class_k/*.png|jpg`` for three colour classes.

    With ``bad``, also a text file, an empty ``.jpg``, a ``.png`` of garbage bytes (train) and a
    truncated ``.jpg`` (val).
    """
    for split, count in (("train", per_class), ("val", val_per_class)):
        for label, colour in enumerate(COLOURS):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                suffix = "png" if index % 2 else "jpg"
                _image(colour, index, size).save(folder / f"{index:03d}.{suffix}")
    if bad:
        (root / "train" / "class_0" / "notes.txt").write_text("not an image")
        (root / "train" / "class_1" / "empty.jpg").write_bytes(b"")
        (root / "train" / "class_2" / "garbage.png").write_bytes(b"\x89PNG garbage" * 10)
        buffer = io.BytesIO()
        _image(COLOURS[0], 0, 64).save(buffer, format="JPEG")
        (root / "val" / "class_0" / "truncated.jpg").write_bytes(buffer.getvalue()[:300])
    return root
