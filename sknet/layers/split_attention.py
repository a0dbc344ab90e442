"""ResNeSt's split-attention convolution (Zhang et al., "ResNeSt: Split-Attention Networks",
Section 3, Figure 2): a selection unit whose choices are the radix splits of one grouped
convolution.

How it relates to the SK unit (:class:`~sknet.layers.SKConv`). At cardinality 1 the grouped
convolution has ``radix`` groups, so split ``r`` is one ungrouped k x k conv (+ BN + ReLU) of the
``r``-th of ``radix`` equal slices of the input channels: SK's branches with ``split_input=True``,
all of one kernel and dilation. The attention is SK's Fuse and Select: pool the sum of the splits
(Eqs. 1-2), reduce, BN, ReLU (Eq. 3), expand to ``radix * C`` logits, softmax over the splits
(Eq. 5), weighted sum (Eq. 6). Precisely, at cardinality 1:

* the same: the splits' convolutions, BNs and ReLUs are the parameters and computation of
  ``SKConv(branches=[(k, d, 1)] * radix, split_input=True)``'s branches; the pooling, the
  reduction's weights, its BN and ReLU, the expansion's weights (read as [radix, C], as SK's
  Select), the softmax and the weighted sum are SK's;
* the reduction's bias (ResNeSt's ``fc1``), absent in SK, changes nothing the unit can compute:
  BN follows and absorbs it (a per-channel shift of the batch mean in training, of the running
  mean in eval);
* the expansion's bias (ResNeSt's ``fc2``), absent in SK, is a real difference: a learned
  per-channel prior over the splits, added to the logits (with both biases zero the two units give
  the same output, which the tests check);
* the reduced width is a hyperparameter: ``max(radix * C / 4, 32)`` here (rounded to a multiple of
  8, :func:`split_attention_width`), ``max(C / 16, 32)`` in SKNet (Eq. 4).

So "at cardinality 1 it differs from SK only by the input split" holds up to the expansion's bias
and the width, and only against an SK unit whose branches share one kernel: SKNet's branches
differ in receptive field (3x3 and dilated 3x3) and read all the input channels (grouped, G = 32),
while the splits differ only in the input channels they read.

With cardinality ``K > 1`` the splits and the attention are cut into ``K`` cardinal groups that
never mix: split ``r`` of group ``k`` reads the ``(r K + k)``-th of ``K * radix`` equal slices of
the input channels, the reduction and the expansion are convolutions with ``K`` groups, and each
group's softmax runs over its own splits. With radix 1 there is nothing to choose between:
the softmax becomes a sigmoid gate per channel (squeeze-and-excitation inside the unit).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from sknet.layers.common import check_batch
from sknet.layers.conv_bn import ConvBnAct

ATTENTION_REDUCTION = 4
"""ResNeSt's reduction of the attention: ``radix * C / 4`` channels."""
ATTENTION_MIN_DIM = 32
"""ResNeSt's floor on the attention width."""
ATTENTION_DIVISOR = 8
"""The attention width is rounded to a multiple of this (as timm does)."""


def split_attention_width(
    channels: int,
    radix: int,
    reduction: int = ATTENTION_REDUCTION,
    min_dim: int = ATTENTION_MIN_DIM,
) -> int:
    """Width of the reduced feature: ``radix * channels / reduction`` rounded to the nearest
    multiple of :data:`ATTENTION_DIVISOR` (halves up), at least ``min_dim``, and raised by one
    divisor if the rounding lost more than 10%; timm's rule, equal to ResNeSt's
    ``max(radix * C / 4, 32)`` for every width of the published models."""
    wanted = radix * channels / reduction
    divisor = ATTENTION_DIVISOR
    width = max(min_dim, int(wanted + divisor / 2) // divisor * divisor)
    return width + divisor if width < 0.9 * wanted else width


class SplitAttention(nn.Module):
    """The attention of a split-attention unit: pooled sum of the splits -> weights
    ``[N, radix, C]``.

    ``reduce``: a 1x1 conv with bias and ``cardinality`` groups from C to ``width`` channels
    (ResNeSt's fc1), BN and ReLU, in one ``nn.Sequential`` (so that :func:`sknet.deploy` folds the
    BN); ``expand``: a 1x1 conv with bias and ``cardinality`` groups to ``radix * C`` logits
    (ResNeSt's fc2), whose output channels are ordered (cardinal group, split, channel within the
    group), as in ResNeSt; the weights are returned ordered (split, channel), each cardinal group's
    softmax over its splits. The module's output is the attention itself, so a forward hook on it
    sees the weights the unit used (the same contract as :class:`~sknet.layers.SKAttention`).

    Args:
        channels: C, channels of each split.
        radix: splits per cardinal group (1: a sigmoid gate instead of the softmax).
        cardinality: cardinal groups; must divide ``channels`` and ``width``.
        width: channels of the reduced feature.
    """

    def __init__(self, channels: int, radix: int, cardinality: int, width: int) -> None:
        super().__init__()
        if channels % cardinality or width % cardinality:
            raise ValueError(
                f"SplitAttention: cardinality {cardinality} must divide the channels ({channels}) "
                f"and the attention width ({width})"
            )
        self.channels = channels
        self.radix = radix
        self.cardinality = cardinality
        self.reduce = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(channels, width, 1, groups=cardinality),
            bn=nn.BatchNorm2d(width),
            act=nn.ReLU(inplace=True),
        ))
        self.expand = nn.Conv2d(width, radix * channels, 1, groups=cardinality)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """Map pooled statistics ``s`` ([N, C] or [N, C, 1, 1]) to weights [N, radix, C]."""
        batch = s.shape[0]
        check_batch(self.reduce.bn, batch, "SplitAttention", "its BatchNorm")
        z = self.reduce(s.reshape(batch, self.channels, 1, 1))
        logits = self.expand(z).flatten(1)
        if self.radix == 1:
            return logits.sigmoid().unsqueeze(1)
        per_group = self.channels // self.cardinality
        grouped = logits.unflatten(1, (self.cardinality, self.radix, per_group))
        return grouped.softmax(2).transpose(1, 2).flatten(2)


class SplitAttentionConv(nn.Module):
    """ResNeSt's split-attention convolution (the module docstring relates it to SK).

    ``splits``: one k x k conv from ``in_channels`` to ``radix * C`` channels with
    ``cardinality * radix`` groups, then BN and ReLU; output channel ``r * C + c`` is channel ``c``
    of split ``r``. The splits are summed, pooled over space, and :class:`SplitAttention` turns the
    result into weights ``a`` [N, radix, C]; the output is ``sum_r a_r * U_r``, C channels.

    The forward is the plain one above (its conv + BN + ReLU takes the fast path of
    :class:`~sknet.layers.ConvBnAct` where that is open); hooks on the unit and on its
    ``attention`` see the output and the weights.

    Args:
        in_channels: input channels (a multiple of ``cardinality * radix``).
        out_channels: C, channels of each split and of the output.
        kernel_size: odd kernel of the conv.
        stride: stride of the conv.
        dilation: dilation of the conv.
        radix: splits per cardinal group (1: the output is the conv gated per channel).
        cardinality: cardinal groups.
        reduction: the attention width is ``radix * C / reduction`` (rounded,
            :func:`split_attention_width`).
        min_dim: the least attention width.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        radix: int = 2,
        cardinality: int = 1,
        reduction: int = ATTENTION_REDUCTION,
        min_dim: int = ATTENTION_MIN_DIM,
    ) -> None:
        super().__init__()
        if radix < 1 or cardinality < 1:
            raise ValueError(
                f"SplitAttentionConv: radix ({radix}) and cardinality ({cardinality}) must be "
                "positive"
            )
        self.radix = radix
        self.cardinality = cardinality
        self.splits = ConvBnAct(
            in_channels, radix * out_channels, kernel_size, stride, dilation,
            groups=cardinality * radix,
        )
        width = split_attention_width(out_channels, radix, reduction, min_dim)
        self.attention = SplitAttention(out_channels, radix, cardinality, width)

    @property
    def receptive_fields(self) -> list[int]:
        """Effective kernel extent of each split, as :attr:`SKConv.receptive_fields
        <sknet.layers.SKConv.receptive_fields>`: all equal (the splits differ in the input
        channels they read, not in kernel), so the kernel-selection analysis has nothing here."""
        conv = self.splits.conv
        return [conv.dilation[0] * (conv.kernel_size[0] - 1) + 1] * self.radix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.splits(x).unflatten(1, (self.radix, self.attention.channels))
        weights = self.attention(features.sum(1).mean((2, 3)))
        return (features * weights[:, :, :, None, None]).sum(1)
