"""ImageNet models of Tables 1-3, 6 and 7: :class:`ResNeXt` configs and their paper numbers."""

from __future__ import annotations

from sknet.layers import DEFAULT_BRANCHES
from sknet.models.registry import Derivation, Paper, register_model, register_paper_row
from sknet.models.resnext import ResNeXt

GROUPED_3X3 = ((3, 1, 32),)
SK_2_32_16 = {"branches": DEFAULT_BRANCHES, "attention": True, "reduction": 16, "min_dim": 32}

SENET_COUNT = "senet"
"""ResNeXt/SENet rows quote SENet's figures, counted with BN and SE gating (docs/reproducing.md)."""

SUM_C2_50 = "sum of C^2 over the 16 SK units of SKNet-50 = 5,029,888"

register_model(
    "resnext50_32x4d", ResNeXt, hub_id="timm/resnext50_32x4d.a1h_in1k",
    depths=(3, 4, 6, 3), branches=GROUPED_3X3,
    paper=Paper(
        "Tables 1-2", "25.0M", "4.24G", top1_224=22.23, top1_320=21.05, counting=SENET_COUNT
    ),
)
register_model(
    "resnext101_32x4d", ResNeXt, hub_id="timm/resnext101_32x4d.gluon_in1k",
    depths=(3, 4, 23, 3), branches=GROUPED_3X3,
    paper=Paper(
        "Table 2", "44.3M", "7.99G", top1_224=21.11, top1_320=19.86, counting=SENET_COUNT,
        derivation=Derivation(
            "the 32x4d template with {3,4,23,3} blocks has 44,177,704 parameters (timm's "
            "resnext101_32x4d has the same); the paper quotes SENet's 44.3M, 0.12M (0.3%) more, "
            "which no published detail of the architecture accounts for",
            params="44.18M",
        ),
    ),
)
register_model(
    "seresnext50_32x4d", ResNeXt, hub_id="timm/seresnext50_32x4d.racm_in1k",
    depths=(3, 4, 6, 3), branches=GROUPED_3X3, se_reduction=16,
    paper=Paper(
        "Tables 1-2", "27.7M", "4.25G", top1_224=21.12, top1_320=19.71, counting=SENET_COUNT,
        derivation=Derivation(
            "ResNeXt-50 (25,028,904) plus SE with r=16 (two 1x1 convs with bias, C -> C/16 -> C) "
            "on the 16 block outputs adds 2,530,992 = 27,559,896 (timm's seresnext50_32x4d has "
            "the same); the paper prints SENet's 27.7M, 0.14M more",
            params="27.56M",
        ),
    ),
)
register_model(
    "seresnext101_32x4d", ResNeXt, hub_id="timm/seresnext101_32x4d.gluon_in1k",
    depths=(3, 4, 23, 3), branches=GROUPED_3X3, se_reduction=16,
    paper=Paper(
        "Table 2", "49.2M", "8.00G", top1_224=20.58, top1_320=18.61, counting=SENET_COUNT,
        derivation=Derivation(
            "ResNeXt-101 (44,177,704) plus SE r=16 on the 33 block outputs (4,777,712) = "
            "48,955,416; the paper prints SENet's 49.2M, 0.24M more (0.12M of it is already in "
            "the ResNeXt-101 gap)",
            params="48.96M",
        ),
    ),
)
# ResNet-18/34 and timm's SK-ResNet-18/34 (not in the paper): basic blocks, SK in the first 3x3 of
# each, ungrouped branches on half of the input channels each, d = max(C/8, 16).
BASIC = {"block": "basic", "base_out": 64}
SK_RESNET = {
    "branches": ((3, 1, 1), (3, 2, 1)), "split_input": True, "reduction": 8, "min_dim": 16,
}
register_model(
    "resnet18", ResNeXt, hub_id="timm/resnet18.tv_in1k",
    depths=(2, 2, 2, 2), branches=((3, 1, 1),), **BASIC,
    paper=Paper("torchvision's weights, timm's resnet18.tv_in1k (not in the paper)", "11.69M",
                top1_224=30.24),
)
register_model(
    "resnet34", ResNeXt, hub_id="timm/resnet34.tv_in1k",
    depths=(3, 4, 6, 3), branches=((3, 1, 1),), **BASIC,
    paper=Paper("torchvision's weights, timm's resnet34.tv_in1k (not in the paper)", "21.80M",
                top1_224=26.69),
)
register_model(
    "skresnet18", ResNeXt, hub_id="timm/skresnet18.ra_in1k",
    depths=(2, 2, 2, 2), **BASIC, **SK_RESNET,
    paper=Paper("timm's skresnet18.ra_in1k (not in the paper)", "11.96M", top1_224=26.98),
)
register_model(
    "skresnet34", ResNeXt, hub_id="timm/skresnet34.ra_in1k",
    depths=(3, 4, 6, 3), **BASIC, **SK_RESNET,
    paper=Paper("timm's skresnet34.ra_in1k (not in the paper)", "22.28M", top1_224=23.04),
)
register_model(
    "sknet26", ResNeXt, depths=(2, 2, 2, 2), **SK_2_32_16,
    paper=Paper("Figure 2 (plotted only, no printed numbers)"),
)
register_model(
    "sknet50", ResNeXt, hub_id="timm/skresnext50_32x4d.ra_in1k",
    depths=(3, 4, 6, 3), **SK_2_32_16,
    paper=Paper("Tables 1-2", "27.5M", "4.47G", top1_224=20.79, top1_320=19.32),
)
register_model(
    "sknet101", ResNeXt, depths=(3, 4, 23, 3), **SK_2_32_16,
    paper=Paper(
        "Table 2", "48.9M", "8.46G", top1_224=20.19, top1_320=18.40,
        derivation=Derivation(
            "Eq. 4 (d = max(C/16, 32)) on {3,4,23,3} units gives 48,736,040; the official "
            "sknet101.prototxt uses d=16 in the four conv3 units and has 48,686,760; both round "
            "to 48.7M, the paper prints 48.9M",
            params="48.74M",
        ),
    ),
)
register_model(
    "resnext50_36x4d", ResNeXt, depths=(3, 4, 6, 3), cardinality=36, branches=((3, 1, 36),),
    paper=Paper(
        "Table 3", "27.6M", "4.70G", top1_224=22.00,
        derivation=Derivation(
            "36 groups of 4 channels widen the middle convs to 144/288/576/1152: 27,549,352 "
            "parameters, 51k (0.2%) under the 27.6M printed, while its 4.699 GMACs match 4.70",
            params="27.55M",
        ),
    ),
)
register_model(
    "resnext56_32x4d", ResNeXt, depths=(3, 4, 8, 3), branches=GROUPED_3X3,
    paper=Paper("Table 3 (ResNeXt-56, deeper)", "27.3M", "4.67G", top1_224=22.04),
)

K3, K5, K7 = (3, 1, 32), (3, 2, 32), (3, 3, 32)

TABLE6_GAPS = {
    (5, 1, 64): Derivation(
        "a 5x5 branch with G=64 holds 25C^2/64 weights instead of 9C^2/32, +0.109375 C^2 per "
        f"unit; with the {SUM_C2_50} that is +550,144 = 28,029,928 (28.0M); the FLOPs (4.56G) "
        "match, the printed 28.1M does not",
        params="28.03M",
    ),
    (7, 1, 128): Derivation(
        "a 7x7 branch with G=128 holds 49C^2/128 weights instead of 9C^2/32, +0.1015625 C^2 per "
        f"unit; with the {SUM_C2_50} that is +510,848 = 27,990,632 (28.0M); the FLOPs (4.55G) "
        "match, the printed 28.1M (the same as the larger 5x5 row) does not",
        params="27.99M",
    ),
}

for kernel, dilation, groups, params, flops, err in (
    (3, 3, 32, "27.5M", "4.47G", 20.97),
    (3, 2, 32, "27.5M", "4.47G", 20.79),
    (3, 1, 32, "27.5M", "4.47G", 20.91),
    (5, 1, 64, "28.1M", "4.56G", 20.80),
    (7, 1, 128, "28.1M", "4.55G", 21.18),
):
    register_paper_row(
        f"T6 K3 + {kernel}x{kernel} D{dilation} G{groups}", "sknet50",
        Paper(
            "Table 6", params, flops, top1_224=err,
            derivation=TABLE6_GAPS.get((kernel, dilation, groups)),
        ),
        branches=(K3, (kernel, dilation, groups)),
    )

THREE_BRANCHES = (
    "a third G=32 3x3 branch adds 9C^2/32 + 2C (BN) per unit: 0.28125 x 5,029,888 + 2 x 7,552 = "
    "1,429,760 over the two-branch sum"
)
TABLE7_GAPS = {
    ("K3+K5+K7", False): Derivation(
        f"{THREE_BRANCHES}, so 26,458,664 + 1,429,760 = 27,888,424 (27.9M); the paper prints "
        "28.0M while its 4.69G matches ours",
        params="27.89M",
    ),
    ("K3+K5+K7", True): Derivation(
        f"{THREE_BRANCHES}; attention adds per unit d*C + 2d (fuse) + 3*d*C (select): "
        "29,249,512, which rounds to 29.2M, 488 parameters short of the 29.3M printed",
        params="29.25M",
    ),
}

for label, branches, attention, params, flops, err in (
    ("K3", (K3,), False, "25.0M", "4.24G", 22.23),
    ("K5", (K5,), False, "25.0M", "4.24G", 25.14),
    ("K7", (K7,), False, "25.0M", "4.24G", 25.51),
    ("K3+K5", (K3, K5), False, "26.5M", "4.46G", 21.76),
    ("K3+K5", (K3, K5), True, "27.5M", "4.47G", 20.79),
    ("K3+K7", (K3, K7), False, "26.5M", "4.46G", 21.82),
    ("K3+K7", (K3, K7), True, "27.5M", "4.47G", 20.97),
    ("K5+K7", (K5, K7), False, "26.5M", "4.46G", 23.64),
    ("K5+K7", (K5, K7), True, "27.5M", "4.47G", 23.09),
    ("K3+K5+K7", (K3, K5, K7), False, "28.0M", "4.69G", 21.47),
    ("K3+K5+K7", (K3, K5, K7), True, "29.3M", "4.70G", 20.76),
):
    # The single-kernel rows repeat ResNeXt-50's Table 2 figures, counted the SENet way.
    counting = SENET_COUNT if len(branches) == 1 else "sk"
    register_paper_row(
        f"T7 {label}{' SK' if attention else ''}", "sknet50",
        Paper(
            "Table 7", params, flops, top1_224=err, counting=counting,
            derivation=TABLE7_GAPS.get((label, attention)),
        ),
        branches=branches, attention=attention,
    )
