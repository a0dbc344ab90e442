"""The probe of 2026-12-04 on the H200 (run from the repository root with PYTHONPATH=.):
ResNeSt-50d eval, bf16 autocast, batch 256, median of 20 CUDA-event timings, ours with the fast
path, ours plain, ours deployed and timm's, then one CUDA profile of each. Output: probe.txt."""

import timm
import torch
from torch.profiler import ProfilerActivity, profile

import sknet
from sknet.layers import fast

torch.backends.cudnn.benchmark = True
x = torch.randn(256, 3, 224, 224, device="cuda")


def median_ms(model: torch.nn.Module, rounds: int = 20) -> float:
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


ours = sknet.create_model("resnest50d").cuda().eval()
theirs = timm.create_model("resnest50d").cuda().eval()
rows = [("timm", median_ms(theirs)), ("ours fast", median_ms(ours))]
with fast.disabled():
    rows.append(("ours plain", median_ms(ours)))
rows.append(("ours deploy", median_ms(sknet.deploy(ours))))
rows.append(("timm again", median_ms(theirs)))
for name, model in (("ours", ours), ("timm", theirs)):
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16), profile(
        activities=[ProfilerActivity.CUDA]
    ) as profiled:
        model(x)
        torch.cuda.synchronize()
    print(name)
    print(profiled.key_averages().table(sort_by="cuda_time_total", row_limit=12,
                                        max_name_column_width=60))
for name, milliseconds in rows:
    print(f"{name}: {milliseconds:.2f} ms")
