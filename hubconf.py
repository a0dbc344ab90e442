"""``torch.hub`` entry points: every registered sknet model under its registered name.

``torch.hub.load(REPO_DIR, "sknet50", source="local", pretrained=PATH)`` is
``sknet.create_model("sknet50", pretrained=PATH)``: ``pretrained`` takes whatever
``create_model`` takes (a weights folder or file, a training run, timm's files, a hub id
``hf-hub:ORG/NAME``, ``True`` for the published weights the registry names); other keywords are
``create_model``'s (``num_classes``, ``features_only``, config overrides).
"""

import collections.abc

from torch import nn

import sknet

dependencies = ["torch", "torchvision", "safetensors", "yaml", "numpy", "PIL"]
"""What torch.hub checks is importable (only callables are entry points: no other import here is
one)."""


def _entry_point(name: str) -> collections.abc.Callable[..., nn.Module]:
    def entry_point(pretrained=None, **kwargs) -> nn.Module:
        return sknet.create_model(name, pretrained=pretrained, **kwargs)

    entry_point.__name__ = entry_point.__qualname__ = name
    entry_point.__doc__ = f"sknet.create_model({name!r}, pretrained=pretrained, **kwargs)"
    return entry_point


globals().update({name: _entry_point(name) for name in sknet.list_models()})
