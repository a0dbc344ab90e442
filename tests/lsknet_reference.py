"""The official LSKNet written out for the tests, from the official sources' structure
(github.com/zcablii/LSKNet mmrotate/models/backbones/lsknet.py; the classification forward of
the VAN code its backbones were pretrained with): the same modules, hyper-parameters and
state-dict key names, plain PyTorch (no mmcv; BatchNorm for ``build_norm_layer``'s BN/SyncBN).

Key names: ``patch_embed{i}.proj``/``.norm``; ``block{i}.{j}.norm1``, ``.attn.proj_1``,
``.attn.spatial_gating_unit.{conv0, conv_spatial, conv1, conv2, conv_squeeze, conv}``,
``.attn.proj_2``, ``.norm2``, ``.mlp.fc1``, ``.mlp.dwconv.dwconv``, ``.mlp.fc2``,
``.layer_scale_1``, ``.layer_scale_2``; ``norm{i}``; ``head``.
"""

from __future__ import annotations

import torch
from torch import nn

T_CONFIG = {"embed_dims": (32, 64, 160, 256), "depths": (3, 3, 5, 2)}
S_CONFIG = {"embed_dims": (64, 128, 320, 512), "depths": (2, 2, 4, 2)}


class LSKblock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim // 2, 1)
        self.conv2 = nn.Conv2d(dim, dim // 2, 1)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(dim // 2, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = self.conv0(x)
        large = self.conv_spatial(small)
        small, large = self.conv1(small), self.conv2(large)
        both = torch.cat([small, large], dim=1)
        pooled = torch.cat([both.mean(1, keepdim=True), both.max(1, keepdim=True).values], 1)
        gate = self.conv_squeeze(pooled).sigmoid()
        mixed = small * gate[:, 0].unsqueeze(1) + large * gate[:, 1].unsqueeze(1)
        return x * self.conv(mixed)


class Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LSKblock(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class DWConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.attn = Attention(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(1e-2 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-2 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1.unsqueeze(-1).unsqueeze(-1) * self.attn(self.norm1(x))
        return x + self.layer_scale_2.unsqueeze(-1).unsqueeze(-1) * self.mlp(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.BatchNorm2d(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class OfficialLSKNet(nn.Module):
    """The official network; ``num_classes=None`` is the mmrotate backbone (no head)."""

    def __init__(
        self, embed_dims, depths, mlp_ratios=(8, 8, 4, 4), num_classes: int | None = 1000
    ) -> None:
        super().__init__()
        self.num_stages = len(depths)
        for i in range(self.num_stages):
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(
                7 if i == 0 else 3, 4 if i == 0 else 2, 3 if i == 0 else embed_dims[i - 1],
                embed_dims[i],
            ))
            setattr(self, f"block{i + 1}", nn.ModuleList(
                Block(embed_dims[i], mlp_ratios[i]) for _ in range(depths[i])
            ))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=1e-6))
        if num_classes is not None:
            self.head = nn.Linear(embed_dims[-1], num_classes)

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The mmrotate backbone's forward: every stage's map after its LayerNorm on tokens."""
        batch, outputs = x.shape[0], []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            height, width = x.shape[2:]
            for block in getattr(self, f"block{i}"):
                x = block(x)
            tokens = getattr(self, f"norm{i}")(x.flatten(2).transpose(1, 2))
            x = tokens.reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier: the last stage's normalised tokens averaged, then the head."""
        last = self.stage_outputs(x)[-1]
        return self.head(last.flatten(2).mean(2))


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere (fan-in scaled, layer scales of order one so that every branch
    counts), random norm affines and perturbed BatchNorm statistics; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, fan_in**-0.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
            for parameter_name, parameter in module.named_parameters(recurse=False):
                if parameter_name.startswith("layer_scale") or parameter_name.endswith("_scale"):
                    parameter.normal_(0.0, 0.5, generator=generator)
    return model.eval()
