"""LSKNet (Li et al., "Large Selective Kernel Network for Remote Sensing Object Detection", ICCV
2023; "LSKNet: A Foundation Lightweight Backbone for Remote Sensing", IJCV 2024) on the shared
:class:`~sknet.models.Backbone` interface.

Four stages, each a strided patch embedding (conv + BN: 7x7/4 for the first, 3x3/2 after),
blocks, and a LayerNorm over the channels; there is no stem apart from the first embedding, so the
feature levels are the four stage outputs (strides 4, 8, 16, 32), each after its stage's norm as
the official backbone returns them. A block is two residual branches, each BN-normalised and
scaled per channel (layer scale, 1e-2 at initialisation):

* attention: 1x1 -> GELU -> :class:`~sknet.layers.LSKUnit` -> 1x1, plus its own input;
* MLP: 1x1 to ``mlp_ratio`` x C -> 3x3 depthwise -> GELU -> 1x1 back to C.

The classifier averages the last stage's normalised map and applies a linear layer. The official
checkpoints' key names are translated in :mod:`sknet.models.lsknet_weights`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from sknet.errors import UserError
from sknet.layers import LSK_DECOMPOSITION, LSKUnit
from sknet.layers.common import bn_affine
from sknet.models.base import Backbone, stage_level


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a random ``rate`` of the
    samples and scale the others by ``1 / (1 - rate)``; the identity in eval mode."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each position of an ``[N, C, H, W]`` map (LSKNet's stage
    norm, which normalises the flattened tokens ``[N, H*W, C]``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PatchEmbedding(nn.Sequential):
    """``proj``, a strided convolution with bias (padding ``kernel // 2``), then ``norm``, a
    BatchNorm (which :func:`sknet.deploy` folds into it)."""

    def __init__(self, in_channels: int, channels: int, kernel: int, stride: int) -> None:
        super().__init__(OrderedDict(
            proj=nn.Conv2d(in_channels, channels, kernel, stride, padding=kernel // 2),
            norm=nn.BatchNorm2d(channels),
        ))


class LSKAttentionBranch(nn.Module):
    """The attention branch of a block: ``proj_in`` (1x1) -> GELU -> LSK unit -> ``proj_out``
    (1x1), plus its own input."""

    def __init__(self, channels: int, branches: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.act = nn.GELU()
        self.lsk = LSKUnit(channels, branches)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.lsk(self.act(self.proj_in(x)))) + x


class ConvMlp(nn.Module):
    """The MLP branch: 1x1 -> 3x3 depthwise -> GELU -> dropout -> 1x1 -> dropout."""

    def __init__(self, channels: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class LSKBlock(nn.Module):
    """``x + s_1 * attn(BN_1(x))``, then ``x + s_2 * mlp(BN_2(x))``: two residual branches with
    per-channel layer scales ``s`` (each branch dropped per sample by stochastic depth)."""

    LAYER_SCALE = 1e-2
    """The layer scales' initial value."""

    def __init__(
        self,
        channels: int,
        mlp_ratio: float,
        branches: Sequence[Sequence[int]],
        drop: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(channels)
        self.attn = LSKAttentionBranch(channels, branches)
        self.norm2 = nn.BatchNorm2d(channels)
        self.mlp = ConvMlp(channels, int(channels * mlp_ratio), drop)
        self.attn_scale = nn.Parameter(torch.full((channels,), self.LAYER_SCALE))
        self.mlp_scale = nn.Parameter(torch.full((channels,), self.LAYER_SCALE))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn_scale[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp_scale[:, None, None] * self.mlp(self.norm2(x)))

    @torch.no_grad()
    def fold_batch_norms(self) -> None:
        """For :func:`sknet.deploy` (eval mode): no convolution precedes these BatchNorms, so
        ``norm2`` is folded into the convolution after it, the MLP's first 1x1 (``fc1(BN(x))``
        is one 1x1 convolution), and ``norm1``, whose output also feeds the attention's
        shortcut, becomes the per-channel affine map it computes: a depthwise 1x1 convolution."""
        scale, shift = bn_affine(self.norm2)
        fc1 = self.mlp.fc1
        fc1.bias.add_(fc1.weight.flatten(1) @ shift)
        fc1.weight.mul_(scale[None, :, None, None])
        self.norm2 = nn.Identity()
        scale, shift = bn_affine(self.norm1)
        channels = scale.numel()
        affine = nn.Conv2d(channels, channels, 1, groups=channels).to(scale)
        affine.weight.copy_(scale[:, None, None, None])
        affine.bias.copy_(shift)
        self.norm1 = affine


class LSKStage(nn.Module):
    """One stage: ``embed`` (patch embedding, the stage's down-sampling), ``blocks``, ``norm``."""

    def __init__(self, embed: PatchEmbedding, blocks: Sequence[LSKBlock], channels: int) -> None:
        super().__init__()
        self.embed = embed
        self.blocks = nn.Sequential(*blocks)
        self.norm = ChannelLayerNorm(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(self.embed(x)))


class LSKNet(Backbone):
    """Large Selective Kernel Network.

    Stages are numbered 1-4 as in the LSKNet papers and checkpoints (``block1`` .. ``block4``):
    there is no stem before them, so :meth:`sk_units` names the LSK units ``SK_1_1`` ..
    ``SK_4_{depth}`` and the feature levels 0-3 are the four stages.

    Args:
        embed_dims: channels of each stage (the registered configs: ``zoo_lsknet``).
        depths: blocks per stage.
        mlp_ratios: hidden width of each stage's MLP over its channels.
        branches: ``(kernel, dilation)`` of the LSK units' depthwise decomposition.
        drop_rate: dropout in the MLPs.
        drop_path_rate: stochastic depth of the last block, rising linearly from 0 at the first.
        num_classes: classifier outputs (0: pooled features).
        in_chans: input image channels.
    """

    first_stage_index = 1
    """LSKNet's numbering: the first stage is stage 1 (its patch embedding is the only stem)."""

    def __init__(
        self,
        embed_dims: Sequence[int],
        depths: Sequence[int],
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        branches: Sequence[Sequence[int]] = LSK_DECOMPOSITION,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if not len(embed_dims) == len(depths) == len(mlp_ratios):
            raise UserError(
                f"LSKNet: {len(embed_dims)} stage widths, {len(depths)} depths and "
                f"{len(mlp_ratios)} MLP ratios; give one of each per stage"
            )
        total = sum(depths)
        rates = [drop_path_rate * index / max(total - 1, 1) for index in range(total)]
        self.stem = nn.Identity()
        self.feature_info = []
        stages, in_channels, first_block = [], in_chans, 0
        for index, (channels, depth, ratio) in enumerate(
            zip(embed_dims, depths, mlp_ratios, strict=True)
        ):
            kernel, stride = (7, 4) if index == 0 else (3, 2)
            blocks = [
                LSKBlock(channels, ratio, branches, drop_rate, rates[first_block + position])
                for position in range(depth)
            ]
            embed = PatchEmbedding(in_channels, channels, kernel, stride)
            stages.append(LSKStage(embed, blocks, channels))
            self.feature_info.append(stage_level(index, channels, 4 * 2**index))
            in_channels, first_block = channels, first_block + depth
        self.stages = nn.ModuleList(stages)
        self.num_features = in_channels
        self.reset_classifier(num_classes)
        init_lsknet(self)


def init_lsknet(model: nn.Module) -> None:
    """LSKNet's initialisation: every convolution normal with std ``sqrt(2 / fan_out)``, fan-out
    counted per group (``k * k * out / groups``), zero bias; linear layers truncated normal
    (std 0.02), zero bias; norms the identity; layer scales as built."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (fan_out // module.groups)))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
