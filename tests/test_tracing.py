"""Every registered model captures as a graph: ``torch.fx.symbolic_trace`` and ``torch.export``
(the fast path's door closes for both, so what they capture is the plain forward)."""

import pytest
import torch

from sknet.models import create_model, get_entry, list_models

RUN_BELOW = 15_000_000
"""Models with fewer parameters are also built for real and their graphs run on an image; the
others are traced and exported on the meta device (shapes only, no weights to initialise)."""


def called_modules(graph: torch.fx.GraphModule) -> list[str]:
    """The submodules a traced graph calls, in order."""
    return [str(node.target) for node in graph.graph.nodes if node.op == "call_module"]


@pytest.mark.parametrize("name", list_models())
def test_symbolic_trace_and_export(name):
    """The fx graph and the exported program compute what the eager eval-mode model does."""
    entry = get_entry(name)
    size = min(entry.paper.input_size if entry.paper else 224, 64)
    shape = (1, entry.config.get("in_chans", 3), size, size)
    with torch.device("meta"):
        model = create_model(name, num_classes=7).eval()
    device = "cpu" if sum(p.numel() for p in model.parameters()) < RUN_BELOW else "meta"
    torch.manual_seed(0)
    with torch.device(device):
        model = create_model(name, num_classes=7).eval() if device == "cpu" else model
        x = torch.randn(shape)
    traced = torch.fx.symbolic_trace(model)
    exported = torch.export.export(model, (x,), strict=False).module()
    # Training mode traces too (torchvision's create_feature_extractor traces both modes): the
    # SK unit's batch-of-one check reads no traced size. The same modules are called.
    trained = torch.fx.symbolic_trace(model.train())
    model.eval()
    assert called_modules(trained) == called_modules(traced)
    with torch.no_grad():
        out = traced(x)
        assert out.shape == (1, 7)
        if device == "cpu":
            expected = model(x)
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(exported(x), expected, rtol=1e-5, atol=1e-6)
