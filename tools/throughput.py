"""Plain-loop training throughput of timm models, bf16 autocast vs fp32 on the CPU.

Usage: .venv/bin/python tools/throughput.py PX ARCH [ARCH ...]   (BENCHMARKS.md, "Training throughput")
"""

import os
import sys
import time

import timm
import torch


def images_per_s(arch: str, px: int, precision: str, bs: int = 32, steps: int = 4) -> float:
    """Best of ``steps - 1`` timed steps (the first warms up)."""
    kwargs = {"img_size": px} if arch.startswith("vit") else {}
    model = timm.create_model(arch, pretrained=False, num_classes=2, **kwargs)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.randn(bs, 3, px, px), torch.randint(0, 2, (bs,))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        torch.nn.functional.cross_entropy(out.float(), y).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return bs / min(times[1:])


if __name__ == "__main__":
    torch.set_num_threads(os.cpu_count() or 1)
    px = int(sys.argv[1])
    for arch in sys.argv[2:]:
        for precision in ("bf16", "fp32"):
            print(f"{arch} {px}px {precision}: {images_per_s(arch, px, precision):.0f} img/s", flush=True)
