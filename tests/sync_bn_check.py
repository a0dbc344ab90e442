"""Run under ``torchrun --nproc_per_node=2`` (gloo, CPU): ProcessSyncBatchNorm over each process's
half of a batch against BatchNorm over the whole batch, forward, backward and running statistics.
Prints ``sync-bn check passed`` on rank 0; fails with an AssertionError otherwise."""

import torch
import torch.distributed as dist
from torch import nn

from sknet.training.sync_bn import ProcessSyncBatchNorm, convert_sync_bn


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    for shape, kind in (((8, 6, 5, 5), nn.BatchNorm2d), ((12, 4), nn.BatchNorm1d)):
        x = torch.randn(*shape, dtype=torch.float64) * 3 + 5  # a large mean
        target = torch.randn(*shape, dtype=torch.float64)
        reference = kind(shape[1], momentum=0.3).double()
        nn.init.uniform_(reference.weight, 0.5, 1.5)
        nn.init.uniform_(reference.bias, -0.5, 0.5)
        synced = convert_sync_bn(nn.Sequential(kind(shape[1], momentum=0.3).double()))[0]
        assert isinstance(synced, ProcessSyncBatchNorm)
        synced.load_state_dict(reference.state_dict())
        for step in range(2):  # the second step normalises around the running mean
            xs = x + step
            whole = xs.clone().requires_grad_()
            ((reference(whole) - target) ** 2).sum().backward()
            part = xs.chunk(world)[rank].clone().requires_grad_()
            loss = ((synced(part) - target.chunk(world)[rank]) ** 2).sum()
            synced.weight.grad = synced.bias.grad = None
            loss.backward()
            torch.testing.assert_close(part.grad, whole.grad.chunk(world)[rank])
            for name in ("weight", "bias"):
                grad = getattr(synced, name).grad.clone()
                dist.all_reduce(grad)  # what DDP does (with the mean: one loss per process)
                torch.testing.assert_close(grad, getattr(reference, name).grad)
                getattr(reference, name).grad = None
            for name, buffer in reference.named_buffers():
                torch.testing.assert_close(getattr(synced, name), buffer)
        synced.eval()
        reference.eval()
        torch.testing.assert_close(synced(x), reference(x))
    dist.destroy_process_group()
    if rank == 0:
        print("sync-bn check passed")


if __name__ == "__main__":
    main()
