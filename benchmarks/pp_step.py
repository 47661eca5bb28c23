"""PixelCNN++ at paper size: parameters, CPU seconds per training step (batch 16, one thread), peak RSS.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/pp_step.py
"""

import resource
import time

import torch

from pixelzoo.likelihood import head_of, nll_per_image
from pixelzoo.models import build_model

torch.set_num_threads(1)
torch.manual_seed(0)
m = build_model("pixelcnn_pp", channels=3, levels=256, height=32, width=32)
print("params", sum(p.numel() for p in m.parameters()), flush=True)
opt = torch.optim.Adam(m.parameters(), lr=1e-3)
x = torch.randint(0, 256, (16, 3, 32, 32))
for step in range(3):
    t0, c0 = time.perf_counter(), time.process_time()
    loss = nll_per_image(m(x), x, head_of(m)).mean() / 3072
    opt.zero_grad()
    loss.backward()
    opt.step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"step {step}: {loss.item() / 0.6931:.3f} bits/dim, wall {wall:.2f} s, cpu {cpu:.2f} s")
print("peak RSS MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
