"""``sknet predict``: the top classes of image files under trained weights.

Images are prepared as the weights' config says (:func:`sknet.data.eval_transform`: resize,
centre crop, mean/std, grey for one-channel models), the very transform evaluation uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sknet.atomic import printable
from sknet.data import eval_transform, read_image
from sknet.devices import pick_device
from sknet.errors import UserError
from sknet.layers.common import input_channels
from sknet.trained import load_trained

BATCH_SIZE = 32
"""Images decoded and classified at a time."""


@dataclass(frozen=True)
class Prediction:
    """The best classes of one image: ``(class name, probability)``, most probable first."""

    image: str
    classes: list[tuple[str, float]]


def _load(path: Path, transform: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    try:
        image = read_image(str(path))
    except Exception as error:  # PIL raises many types for damaged or foreign files
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"{path}: not a readable image ({reason}); pass files Pillow can decode "
            "(PNG, JPEG, ...)"
        ) from None
    return transform(image)


def predict(
    checkpoint: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    *,
    top: int = 5,
    device: str = "auto",
) -> list[Prediction]:
    """Classify image files with trained weights.

    Args:
        checkpoint: a training ``--out`` folder, a weights folder or ``X.safetensors`` (their
            config must hold the preprocessing; a bare ``last.pt`` does not).
        images: image file paths.
        top: classes kept per image (at most the class count).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.

    Returns:
        One :class:`Prediction` per image, in order.

    Raises:
        FileNotFoundError: a missing checkpoint or image.
        ValueError: an unreadable image, or weights without a preprocessing config.
    """
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    paths = [Path(image) for image in images]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{missing[0]}: no such image file{more}")
    path, model, record = load_trained(checkpoint, "--checkpoint")
    if record.preprocessing is None:
        raise UserError(
            f"{path}: the weights record no preprocessing (input size, mean/std), so images "
            "cannot be prepared for them; use weights saved with it (a run's best.safetensors, "
            "or set model.record's preprocessing before save_pretrained)"
        )
    transform = eval_transform(record.preprocessing, input_channels(model), str(path))
    names = list(record.class_names or range(record.num_classes))
    target = pick_device(device)
    model.to(target)
    results = []
    for start in range(0, len(paths), BATCH_SIZE):
        chunk = paths[start : start + BATCH_SIZE]
        batch = torch.stack([_load(image, transform) for image in chunk]).to(target)
        with torch.no_grad():
            probabilities = model(batch).float().softmax(dim=1).cpu()
        best = probabilities.topk(min(top, probabilities.shape[1]), dim=1)
        for image, values, indices in zip(chunk, best.values, best.indices, strict=True):
            classes = [
                (str(names[index]), float(value))
                for value, index in zip(values.tolist(), indices.tolist(), strict=True)
            ]
            results.append(Prediction(str(image), classes))
    return results


def format_prediction(prediction: Prediction) -> str:
    """The image, then one ``probability  class`` line per class."""
    lines = [prediction.image]
    lines += [f"  {probability:7.2%}  {name}" for name, probability in prediction.classes]
    return printable("\n".join(lines))  # file and class names of any encoding print
