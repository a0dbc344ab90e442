"""Where SKNet-50's extra GPU time goes (2026-12-04, H200; run from the repository root with
PYTHONPATH=.): eval, bf16 autocast, batch 256, channels_last and NCHW; median of 20 CUDA-event
timings of sknet50 (fast path open and closed) and resnext50_32x4d, then one CUDA profile of each
(kernels by total time). Output: profile_sk.txt."""

import torch
from torch.profiler import ProfilerActivity, profile

import sknet
from sknet.layers import fast

torch.backends.cudnn.benchmark = True


def median_ms(model: torch.nn.Module, x: torch.Tensor, rounds: int = 20) -> float:
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
        for _ in range(5):
            model(x)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(True), torch.cuda.Event(True)
        times = []
        for _ in range(rounds):
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    return sorted(times)[rounds // 2]


for layout in (torch.channels_last, torch.contiguous_format):
    x = torch.randn(256, 3, 224, 224, device="cuda").to(memory_format=layout)
    models = {
        name: sknet.create_model(name).cuda().eval().to(memory_format=layout)
        for name in ("sknet50", "resnext50_32x4d")
    }
    print(f"== {layout}")
    print(f"sknet50 fast: {median_ms(models['sknet50'], x):.2f} ms")
    with fast.disabled():
        print(f"sknet50 plain: {median_ms(models['sknet50'], x):.2f} ms")
    print(f"resnext50_32x4d: {median_ms(models['resnext50_32x4d'], x):.2f} ms")
    for name, model in models.items():
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16), profile(
            activities=[ProfilerActivity.CUDA]
        ) as profiled:
            model(x)
            torch.cuda.synchronize()
        print(name)
        print(profiled.key_averages().table(sort_by="cuda_time_total", row_limit=15,
                                            max_name_column_width=90))
