#!/usr/bin/env python3
"""The PyTorch reference for `benches/align_throughput.rs`: G3's alignment heads at G3's shapes,
trained the way G3's own training script would on CPU (torch.nn modules, autograd, torch.optim
AdamW), so that the two figures compare candle's training step against what a researcher would
otherwise run.

The model is the one georag builds (src/align/model.rs, layers.rs) and G3's code defines:
- the location tower: Web Mercator / 20037508.3427892, times 2 pi, three RFF capsules (B ~
  N(0, sigma^2), sigma 2^0, 2^4, 2^8; 256 features, cos and sin), each Linear(512, 1024) ReLU
  Linear(1024, 1024) ReLU Linear(1024, 1024) ReLU and a Linear(1024, 512) head, summed;
- heads Linear -> ReLU -> Linear: image 768 -> 768 -> 768, GPS 512 -> 512 -> 768;
- CLIP's symmetric contrastive loss (learnable ln(1/T), clamped at ln 100) between them;
- AdamW lr 3e-5, weight decay 1e-6.
It prints the trainable parameter count (georag's bench prints its own; the shell script checks
that they agree) and the rate.

  align_reference.py STEPS BATCH [DEVICE]     (DEVICE cpu, the default, or cuda)
"""
import math
import sys
import time

import numpy as np
import torch
from torch import nn

SIGMAS = [2.0**0, 2.0**4, 2.0**8]
MP16 = 4_723_695.0


def mlp(a, b, c):
    return nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c))


class Capsule(nn.Module):
    def __init__(self, sigma, features=256, hidden=1024, out=512):
        super().__init__()
        self.register_buffer("b", torch.randn(features, 2) * sigma)
        self.body = nn.Sequential(
            nn.Linear(2 * features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, out)

    def forward(self, x2pi):
        vp = x2pi @ self.b.T
        return self.head(self.body(torch.cat([torch.cos(vp), torch.sin(vp)], dim=-1)))


class G3Heads(nn.Module):
    def __init__(self, image_dim=768, shared=768):
        super().__init__()
        self.capsules = nn.ModuleList([Capsule(s) for s in SIGMAS])
        self.image_gps = mlp(image_dim, image_dim, shared)
        self.gps = mlp(512, 512, shared)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def loss(self, image, x2pi):
        g = self.gps(sum(c(x2pi) for c in self.capsules))
        ig = self.image_gps(image)
        logits = nn.functional.normalize(ig, dim=-1) @ nn.functional.normalize(g, dim=-1).T
        logits = logits * self.log_scale.clamp(max=math.log(100)).exp()
        target = torch.arange(len(image), device=image.device)
        return (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)) / 2


def mercator_2pi(lat, lon):
    la = np.radians(np.clip(lat, -85.05112877980659, 85.05112877980659))
    x = lon / 180.0
    y = np.log(np.tan(np.pi / 4 + la / 2)) / np.pi
    return torch.from_numpy(np.stack([x, y], axis=1) * 2 * np.pi).float()


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    dev = torch.device(sys.argv[3] if len(sys.argv) > 3 else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = G3Heads().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=1e-6)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def data():
        img = torch.randn(batch, 768, device=dev)
        return img, mercator_2pi(rng.uniform(-60, 70, batch), rng.uniform(-180, 180, batch)).to(dev)

    # Seconds in the forward pass, the backward pass and the optimizer update.
    phases = [0.0, 0.0, 0.0]

    def step(img, x, phases):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model.loss(img, x)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        sync()
        t3 = time.perf_counter()
        phases[0] += t1 - t0
        phases[1] += t2 - t1
        phases[2] += t3 - t2

    for _ in range(2):
        step(*data(), [0.0, 0.0, 0.0])
    batches = [data() for _ in range(steps)]
    t = time.perf_counter()
    for img, x in batches:
        step(img, x, phases)
    secs = time.perf_counter() - t
    rate = steps * batch / secs
    print(
        f"torch {torch.__version__}: {n_params} trainable parameters; {steps} steps of batch {batch} in {secs:.2f} s = "
        f"{rate:.1f} samples/s ({secs / steps:.3f} s/step: forward {phases[0] / steps:.3f}, backward {phases[1] / steps:.3f}, "
        f"AdamW {phases[2] / steps:.3f}); one MP-16 epoch projected {MP16 / rate / 3600:.1f} h "
        f"on {dev} ({torch.get_num_threads()} CPU threads)"
    )


if __name__ == "__main__":
    main()
