"""Our backbones in torchvision's detection API: ``FeatureSequence`` for ``IntermediateLayerGetter``
and ``BackboneWithFPN``, ``create_feature_extractor`` in training and eval mode, and a Faster
R-CNN that trains at a batch of one with frozen norms."""

import math

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.feature_extraction import create_feature_extractor

import sknet
from sknet.layers import freeze_norm
from sknet.models import FeatureExtractor, FeatureSequence, get_entry, list_models


def test_the_children_run_in_order_and_give_the_features():
    features = sknet.create_model("sknet26", features_only=True, out_indices=(0, 1, 2, 3, 4))
    body = FeatureSequence(features.eval())
    stages = ["stages_0", "stages_1", "stages_2", "stages_3"]
    assert [name for name, _ in body.named_children()] == ["stem_0", "stem_1", *stages]
    levels = {name: str(level) for level, name in enumerate(stages, start=1)}
    assert body.return_layers == {"stem_0": "0", **levels}
    assert body.feature_info.module_name() == list(body.return_layers)
    assert body.feature_info.channels() == features.feature_info.channels()
    assert body.stages_2 is features.stages[2]  # the same modules, not copies
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = features(x)
        got = body(x)
        by_name = IntermediateLayerGetter(body, body.return_layers)(x)
    assert list(by_name) == ["0", "1", "2", "3", "4"]
    for ours, theirs, reference in zip(got, by_name.values(), expected, strict=True):
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)
        torch.testing.assert_close(theirs, reference, rtol=0, atol=0)


def test_a_stem_whose_level_is_its_output_is_one_child():
    body = FeatureSequence(sknet.create_model("sknet_digits", features_only=True, out_indices=(1,)))
    assert [name for name, _ in body.named_children()] == ["stem", "stages_0"]
    assert body.return_layers == {"stages_0": "0"}


def test_it_loads_the_backbone_names_and_its_own():
    features = sknet.create_model("sknet_digits", features_only=True)
    body = FeatureSequence(sknet.create_model("sknet_digits", features_only=True))
    body.load_state_dict(features.state_dict())  # strict: stem.*, stages.N.*
    renamed = {key.replace("stages.", "stages_", 1): value
               for key, value in features.state_dict().items()}
    assert body.state_dict().keys() == renamed.keys()
    for key, value in body.state_dict().items():
        assert torch.equal(value, renamed[key]), key
    body.load_state_dict(renamed)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        body.load_state_dict({**renamed, "fc.weight": torch.zeros(1)})


@pytest.mark.parametrize("name", list_models())
def test_every_backbone_fits_torchvision_fpn_with_frozen_norms(name):
    """Shapes only (meta device): ``BackboneWithFPN`` takes the stages by name, one FPN level each
    at the stage's stride, and no BatchNorm is left."""
    with torch.device("meta"):
        features = sknet.create_model(name, features_only=True, frozen_norm=True)
        body = FeatureSequence(features)
        backbone = BackboneWithFPN(
            body, body.return_layers, features.feature_info.channels(), out_channels=16
        )
        out = backbone(torch.empty(1, get_entry(name).config.get("in_chans", 3), 64, 64))
    assert not any(isinstance(module, _BatchNorm) for module in backbone.modules())
    assert list(out) == [*body.return_layers.values(), "pool"]
    for level, reduction in zip(out.values(), features.feature_info.reduction(), strict=False):
        assert tuple(level.shape) == (1, 16, math.ceil(64 / reduction), math.ceil(64 / reduction))


@pytest.mark.parametrize(("name", "size"), [("sknet26", 64), ("sk_shufflenet_v2_x0_5", 128)])
def test_create_feature_extractor_traces_both_modes(name, size):
    """The stage outputs equal ``features_only``'s in eval and training mode, and with frozen
    norms it trains at a batch of one. In fp64, to 1e-9 in norm: training BatchNorm over the
    deepest maps of two images (4x4 for ShuffleNetV2's twelve BatchNorms there) amplifies
    round-off."""
    model = sknet.create_model(name).double()
    nodes = {f"stages.{index}": str(index) for index in range(len(model.stages))}
    extractor = create_feature_extractor(model, return_nodes=nodes)
    features = FeatureExtractor(model)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    for train in (False, True):
        got = extractor.train(train)(x)
        assert list(got) == list(nodes.values())
        for ours, reference in zip(got.values(), features.train(train)(x), strict=True):
            assert ours.shape == reference.shape
            assert torch.linalg.vector_norm(ours - reference) <= 1e-9 * reference.norm()
    frozen = create_feature_extractor(freeze_norm(model).train(), return_nodes=nodes)
    frozen(x[:1])[str(len(nodes) - 1)].sum().backward()
    assert all(p.grad is not None for p in frozen.parameters())


def test_faster_rcnn_trains_at_a_batch_of_one_and_detects():
    torch.manual_seed(0)
    features = sknet.create_model("sknet26", features_only=True, frozen_norm=True)
    body = FeatureSequence(features)
    backbone = BackboneWithFPN(
        body, body.return_layers, features.feature_info.channels(), out_channels=32
    )
    detector = FasterRCNN(backbone, num_classes=3, min_size=128, max_size=160).train()
    images = [torch.rand(3, 120, 150)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])}]
    losses = detector(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                           "loss_rpn_box_reg"}
    assert all(torch.isfinite(loss) for loss in losses.values())
    sum(losses.values()).backward()
    attention = features.stages[3][-1].conv2.attention  # the deepest SK unit's
    assert attention.select.weight.grad is not None and attention.select.weight.grad.any()
    with torch.no_grad():
        detections = detector.eval()([torch.rand(3, 100, 130)])
    assert len(detections) == 1 and set(detections[0]) == {"boxes", "labels", "scores"}
    assert detections[0]["boxes"].shape[1:] == (4,)
