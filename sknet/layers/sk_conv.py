"""The Selective Kernel convolution (Section 3.1, Eqs. 1-6, Figure 1), for images
(:class:`SKConv`), signals (:class:`SKConv1d`) and volumes (:class:`SKConv3d`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sknet.layers import fast
from sknet.layers.common import check_batch
from sknet.layers.conv_bn import ConvBnAct

Branch = tuple[int, int, int]
"""One Split branch: ``(kernel_size, dilation, groups)``."""

DEFAULT_BRANCHES: tuple[Branch, ...] = ((3, 1, 32), (3, 2, 32))
"""SK[2, 32, r]: a 3x3 and a "5x5" realised as 3x3 with dilation 2, both with G = 32."""


def fuse_dim(channels: int, reduction: int, min_dim: int) -> int:
    """Width d of the compact feature z, Eq. 4: ``d = max(C / r, L)``."""
    return max(channels // reduction, min_dim)


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def parse_branches(
    branches: Sequence[Sequence[int]],
    fields: Sequence[str] = ("kernel", "dilation", "groups"),
    owner: str = "SK",
    note: str = "",
    kind: str = "branch",
) -> tuple[tuple[int, ...], ...]:
    """Validate a branch list such as ``[(3, 1, 32), (3, 2, 32)]`` and return it as tuples.

    Args:
        branches: one sequence of positive ints per branch.
        fields: what each int is (their count is the length every branch must have).
        owner: the model or layer the branches are for, in error messages.
        note: appended to the error message (e.g. where the missing field comes from).
        kind: what a branch is called in the message (e.g. ``"depthwise branch"``).
    """
    described = ", ".join(fields)
    if not _is_list(branches) or not all(_is_list(branch) for branch in branches):
        raise ValueError(
            f"{owner} branches must be a list holding one ({described}) list per {kind}, "
            f"got {str(branches)[:100]}"
        )
    parsed = []
    for branch in branches:
        if len(branch) != len(fields) or not all(isinstance(v, int) and v >= 1 for v in branch):
            count = {2: "two", 3: "three"}.get(len(fields), str(len(fields)))
            raise ValueError(
                f"{owner} branch {tuple(branch)!r} must be {count} positive ints "
                f"({described}){note}"
            )
        parsed.append(tuple(branch))
    if not parsed:
        raise ValueError(f"{owner} needs at least one {kind} ({described})")
    return tuple(parsed)


class SKAttention(nn.Module):
    """Fuse (Eq. 3) and Select (Eq. 5): channel statistics ``s`` -> softmax weights ``[N, M, C]``.

    ``fuse`` is ``z = ReLU(BN(W s))`` with ``W`` in R^{d x C} (a 1x1 conv without bias); ``select``
    stacks the M matrices ``A_m`` in R^{C x d} into one 1x1 conv to ``M * C`` channels (the same
    parameters). The module's output is the attention itself, so a forward hook on it sees the
    weights the network used, summing to one over the branch axis.

    Args:
        channels: C, channels of every branch.
        num_branches: M >= 2.
        reduction: r of Eq. 4.
        min_dim: L of Eq. 4.
    """

    def __init__(self, channels: int, num_branches: int, reduction: int = 16, min_dim: int = 32):
        super().__init__()
        if num_branches < 2:
            raise ValueError(f"SKAttention needs M >= 2 branches, got {num_branches}")
        self.channels = channels
        self.num_branches = num_branches
        dim = fuse_dim(channels, reduction, min_dim)
        self.fuse = ConvBnAct(channels, dim, 1)
        self.select = nn.Conv2d(dim, num_branches * channels, 1, bias=False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """Map pooled statistics ``s`` ([N, C] or [N, C, 1, 1], Eq. 2) to weights [N, M, C]."""
        batch = s.shape[0]
        check_batch(self.fuse.bn, batch, "SKConv", "the fuse BatchNorm (Eq. 3)")
        # A 1x1 convolution of a 1x1 map is a matrix product: run both as one (F.linear), far
        # cheaper than a convolution call on such tiny inputs. BN (Eq. 3) keeps its module.
        conv = self.fuse.conv
        z = F.linear(s.reshape(batch, self.channels), conv.weight.flatten(1), conv.bias)
        z = self.fuse.act(self.fuse.bn(z[:, :, None, None])).flatten(1)
        logits = F.linear(z, self.select.weight.flatten(1))
        return logits.view(batch, self.num_branches, self.channels).softmax(dim=1)


class SKConv(nn.Module):
    """Selective Kernel convolution: Split, Fuse, Select.

    Split runs M branches ``ConvBnAct(kernel, dilation, groups)`` on the same input, each with the
    given stride. With attention, the output is ``V = sum_m a_m * U_m`` (Eq. 6) where the
    weights ``a`` come from :class:`SKAttention` applied to the global average pool of
    ``U = sum_m U_m`` (Eqs. 1-2). With ``attention=False`` the output is the naive sum U of
    Table 7 and the layer has no fuse/select parameters. With one branch it is a plain
    conv + BN + ReLU.

    The forward is Eqs. 1-6 as written (:meth:`forward_plain`) unless the fast path
    (:mod:`sknet.layers.fast`) is active: it computes the same without stacked branch copies, with
    a one-pass Select, and in training keeps only the branch convolution outputs. Forward hooks on
    the unit and on its ``attention`` fire either way.

    ``split_input`` gives each branch its own share of the input channels (branch m reads the m-th
    of M equal slices) instead of all of them: timm's SK-ResNet layout, which keeps ungrouped
    branches at the parameter count of one convolution.

    The same layer runs on any number of spatial dimensions: :class:`SKConv1d` on signals
    ``[N, C, L]``, :class:`SKConv3d` on volumes ``[N, C, D, H, W]`` (the global pool of Eq. 2
    averages over every spatial axis; Fuse and Select are the same).

    Args:
        in_channels: input channels.
        out_channels: C, channels of every branch and of the output.
        stride: stride of every branch.
        branches: ``(kernel_size, dilation, groups)`` per branch; SK[M, G, r] is M branches of G
            groups.
        reduction: r of Eq. 4.
        min_dim: L of Eq. 4.
        attention: select with softmax attention (True) or sum the branches (False).
        split_input: split the input channels between the branches (``in_channels`` must be a
            multiple of M).
    """

    dims = 2
    """Spatial dimensions of the input."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        branches: Sequence[Sequence[int]] = DEFAULT_BRANCHES,
        reduction: int = 16,
        min_dim: int = 32,
        attention: bool = True,
        split_input: bool = False,
    ) -> None:
        super().__init__()
        self.branch_specs = parse_branches(branches)
        count = len(self.branch_specs)
        if split_input and in_channels % count:
            raise ValueError(
                f"{type(self).__name__}: split_input needs in_channels ({in_channels}) divisible "
                f"by the {count} branches"
            )
        self.split_input = split_input and count > 1
        branch_in = in_channels // count if self.split_input else in_channels
        self.branches = nn.ModuleList(
            ConvBnAct(branch_in, out_channels, kernel, stride, dilation, groups, dims=self.dims)
            for kernel, dilation, groups in self.branch_specs
        )
        use_attention = attention and len(self.branch_specs) > 1
        self.attention = (
            SKAttention(out_channels, len(self.branch_specs), reduction, min_dim)
            if use_attention
            else None
        )

    @property
    def receptive_fields(self) -> list[int]:
        """Effective kernel extent ``dilation * (kernel - 1) + 1`` of each branch."""
        return [d * (k - 1) + 1 for k, d, _ in self.branch_specs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast.sk_conv(self, x) if fast.active(x) else self.forward_plain(x)

    def forward_plain(self, x: torch.Tensor) -> torch.Tensor:
        """Eqs. 1-6 as written: the branch outputs ``U_m`` (each on its slice of the input
        channels with ``split_input``) stacked, ``U = sum_m U_m`` (Eq. 1), ``s`` its mean over
        every spatial axis (Eq. 2), the attention (Eqs. 3-5), ``V = sum_m a_m U_m`` (Eq. 6)."""
        count = len(self.branches)
        if count == 1:
            return self.branches[0](x)
        parts = [x] * count
        if self.split_input:
            width = self.branches[0].conv.in_channels
            parts = [x[:, m * width : (m + 1) * width] for m in range(count)]
        features = torch.stack(
            [branch(part) for branch, part in zip(self.branches, parts, strict=True)], 1
        )
        fused = features.sum(1)
        if self.attention is None:
            return fused
        s = fused.mean(tuple(range(2, 2 + self.dims)))
        weights = self.attention(s)
        return (features * weights[(..., *[None] * self.dims)]).sum(1)


class SKConv1d(SKConv):
    """:class:`SKConv` on signals ``[N, C, L]`` (Conv1d branches, the pool over L)."""

    dims = 1


class SKConv3d(SKConv):
    """:class:`SKConv` on volumes ``[N, C, D, H, W]`` (Conv3d branches, the pool over D, H, W)."""

    dims = 3
