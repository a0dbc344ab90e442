"""The Selective Kernel convolution (Section 3.1, Eqs. 1-6, Figure 1), for images
(:class:`SKConv`), signals (:class:`SKConv1d`) and volumes (:class:`SKConv3d`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sknet.layers.conv_bn import ConvBnAct, spatial_dims
from sknet.layers.sk_fused import ConvSpec, SKTrain, select

Branch = tuple[int, int, int]
"""One Split branch: ``(kernel_size, dilation, groups)``."""

DEFAULT_BRANCHES: tuple[Branch, ...] = ((3, 1, 32), (3, 2, 32))
"""SK[2, 32, r]: a 3x3 and a "5x5" realised as 3x3 with dilation 2, both with G = 32."""


def fuse_dim(channels: int, reduction: int, min_dim: int) -> int:
    """Width d of the compact feature z, Eq. 4: ``d = max(C / r, L)``."""
    return max(channels // reduction, min_dim)


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
        if self.training and batch == 1:
            raise ValueError(
                "SKConv in training mode needs a batch of at least 2: the fuse BatchNorm (Eq. 3) "
                "normalises one value per channel over the batch; use a larger batch, drop the "
                "last incomplete batch, or call model.eval()"
            )
        # A 1x1 convolution of a 1x1 map is a matrix product: run both as one (F.linear), far
        # cheaper than a convolution call on such tiny inputs. BN (Eq. 3) keeps its module.
        conv = self.fuse.conv
        z = F.linear(s.reshape(batch, self.channels), conv.weight.flatten(1), conv.bias)
        z = self.fuse.bn_act(z[:, :, None, None]).flatten(1)
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

    The forward computes exactly that without the waste of a literal implementation (the tests
    keep the literal one and check this against it, outputs and gradients):

    * no stacked copy of the branch outputs: the pool of ``U`` is the sum of each branch's pool,
      and for two branches the Select is one pass, ``V = U_2 + a_1 (U_1 - U_2)`` (the softmax
      weights sum to one: ``a_1`` is the sigmoid of the logit difference);
    * inference: each branch folds its eval-mode BN into its convolution, and without autograd
      the Select writes into a branch output;
    * training with autograd: :class:`~sknet.layers.sk_fused.SKTrain` keeps only the branch
      convolution outputs and recomputes BN+ReLU in the backward, and :meth:`forward_into` does
      not keep ``V`` either, so an SK bottleneck keeps as many tensors as a ResNeXt one. In
      training the branch convolutions and BatchNorms are run directly (not through their
      modules' hooks); the attention module is called as usual.

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
        if len(self.branches) > 1 and self._trains_with_autograd():
            return self._forward_training(x)
        return self._forward_inference(x)

    def forward_into(self, x: torch.Tensor, project: ConvBnAct) -> torch.Tensor:
        """``project(self(x))``: the SK unit and the convolution unit that follows it.

        In training this does not keep the SK output ``V`` for the backward (the next
        convolution's weight gradient needs it): it is recomputed from the branch convolution
        outputs, which are kept anyway. A ResNeXt bottleneck with an SK unit then keeps as many
        tensors as one with a single grouped convolution. Forward hooks on this SKConv itself do
        not run in that case; hooks on its ``attention`` always do.
        """
        fused = (
            len(self.branches) > 1
            and self._trains_with_autograd()
            and _trains_bn(project)
            and project.conv.bias is None
        )
        if not fused:
            return project(self(x))
        conv = project.conv
        spec = (conv.stride, conv.padding, conv.dilation, conv.groups)
        return project.bn_act(self._forward_training(x, conv.weight, spec))

    def _trains_with_autograd(self) -> bool:
        """Whether the memory-lean training function applies: autograd on, and every BN of the
        unit (branches and fuse) a training-mode BatchNorm after a bias-free convolution."""
        units = list(self.branches)
        if self.attention is not None:
            units.append(self.attention.fuse)
        return torch.is_grad_enabled() and all(
            _trains_bn(unit) and unit.conv.bias is None for unit in units
        )

    def branch_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """What each branch reads: ``x`` itself, or with ``split_input`` its m-th channel slice."""
        if self.split_input:
            return list(x.chunk(len(self.branches), dim=1))
        return [x] * len(self.branches)

    def _forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """Each branch folds an eval-mode BN into its convolution, the pool reads each branch
        once, and without autograd the Select writes into the branch outputs."""
        if len(self.branches) == 1:
            return self.branches[0](x)
        inplace = not torch.is_grad_enabled()
        parts = self.branch_inputs(x)
        features = [branch(part) for branch, part in zip(self.branches, parts, strict=True)]
        weights = None
        if self.attention is not None:
            spatial = spatial_dims(self.dims)
            pooled = features[0].mean(spatial)
            for feature in features[1:]:
                pooled = pooled + feature.mean(spatial)
            weights = self.attention(pooled)
        return select(features, weights, inplace)

    def _forward_training(
        self,
        x: torch.Tensor,
        project_weight: torch.Tensor | None = None,
        project_spec: ConvSpec | None = None,
    ) -> torch.Tensor:
        """Training with autograd: keep the branch convolution outputs, recompute the rest."""
        parts = self.branch_inputs(x)
        conv_outs = [
            branch.convolve(part) for branch, part in zip(self.branches, parts, strict=True)
        ]
        bns = [branch.bn for branch in self.branches]
        running = [(bn.running_mean, bn.running_var, _bn_momentum(bn), bn.eps) for bn in bns]
        tensors = [*conv_outs, *(bn.weight for bn in bns), *(bn.bias for bn in bns)]
        if self.attention is not None:
            fuse, select_conv = self.attention.fuse, self.attention.select
            tensors += [fuse.conv.weight, fuse.bn.weight, fuse.bn.bias, select_conv.weight]
        if project_weight is not None:
            tensors.append(project_weight)
        return SKTrain.apply(self.attention, project_spec, running, *tensors)


class SKConv1d(SKConv):
    """:class:`SKConv` on signals ``[N, C, L]`` (Conv1d branches, the pool over L)."""

    dims = 1


class SKConv3d(SKConv):
    """:class:`SKConv` on volumes ``[N, C, D, H, W]`` (Conv3d branches, the pool over D, H, W)."""

    dims = 3


LOCAL_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
"""BatchNorms that normalise over this process's batch (``SyncBatchNorm`` does not: the fused
path, which calls the BN kernel itself, leaves it to its module)."""


def _trains_bn(unit: nn.Module) -> bool:
    """Whether ``unit`` is a conv + training-mode BN (+ ReLU) that the fused path can run."""
    bn = getattr(unit, "bn", None)
    return isinstance(bn, LOCAL_BATCH_NORMS) and bn.training and bn.affine


def _bn_momentum(bn: nn.Module) -> float:
    """The running-average factor the BatchNorm module would use for this batch."""
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            return 1.0 / float(bn.num_batches_tracked)
    return 0.0 if bn.momentum is None else bn.momentum
