"""The volumetric prior: the generator in 3-D for z-stacks, aware of anisotropy.

The architecture is the 2-D generator of ``_nets`` (three down and three up stages,
channels 8/16/32, BatchNorm, LeakyReLU 0.2, bilinear - here trilinear - upsampling, a
sigmoid head, no skips) with 3-D convolutions. Microscope stacks are usually coarser in z
than in y/x, so each stage decides from the voxel size (``spacing``, e.g. a layer's
``scale``) what to do along z, as nnU-Net does for its pooling:

- z is halved (stride 2) only while a voxel is no longer in z than 1.5x its current
  y/x size; otherwise the stage works in-plane along z (stride 1);
- the z extent of the kernels is 3 while a voxel is less than twice as long in z as in
  y/x, else 1 (a 1 x 3 x 3 kernel: no mixing of planes that are far apart).

So an isotropic stack gets full 3-D stages; a stack with 4x coarser z starts in-plane and
mixes planes only where y/x have caught up. The ensemble is a grouped model as in 2-D:
member g only sees its own channels; each member's weights and noise come from its seed.
"""

from __future__ import annotations

from typing import Generator, Sequence

import numpy as np
import torch
from torch import nn

from ._fit import FitProgress, member_batches
from ._nets import CHANNELS, NOISE_CHANNELS, _act, _Generator, _MemberInit, make_noise


def plan(spacing: Sequence[float], n_planes: int, n_stages: int = len(CHANNELS)
         ) -> list[tuple[int, int]]:
    """Per stage ``(z kernel, z stride)`` for voxel size ``spacing`` = (z, y, x) and
    ``n_planes`` planes (z is never reduced below 2 planes)."""
    sz, sy, sx = (float(v) for v in spacing)
    sxy = min(sy, sx)
    stages, nz = [], n_planes
    for _ in range(n_stages):
        kz = 3 if sz < 2.0 * sxy and nz >= 2 else 1
        stride = 2 if sz <= 1.5 * sxy and nz >= 4 else 1
        stages.append((kz, stride))
        sxy *= 2.0
        sz *= stride
        nz = (nz + stride - 1) // stride
    return stages


class _Conv3d(_MemberInit, nn.Conv3d):
    """Grouped 3-D convolution over G members, reflection padded."""

    def __init__(self, g: int, cin: int, cout: int, kernel: tuple, stride: tuple = (1, 1, 1)):
        super().__init__(g * cin, g * cout, kernel, stride=stride, padding=0, groups=g)
        self.pads = tuple(p for k in reversed(kernel) for p in ((k - 1) // 2,) * 2)
        self.cin, self.cout = cin, cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = nn.functional.pad(x, self.pads, mode="reflect")
        return super().forward(x)


class VolumeGenerator(_Generator):
    """G independent 3-D generators evaluated as one grouped network."""

    def __init__(self, n_members: int, out_channels: int, seeds: Sequence[int],
                 stages: list[tuple[int, int]], channels: Sequence[int] = CHANNELS,
                 in_channels: int = NOISE_CHANNELS):
        super().__init__()
        g = n_members
        downs, ups = [], []
        cin = in_channels
        for i, (c, (kz, sz)) in enumerate(zip(channels, stages)):
            downs.append(nn.Sequential(
                _Conv3d(g, cin, c, (kz, 3, 3), (sz, 2, 2)), nn.BatchNorm3d(g * c), _act(),
                _Conv3d(g, c, c, (kz, 3, 3)), nn.BatchNorm3d(g * c), _act()))
            deeper = channels[i + 1] if i + 1 < len(channels) else c
            ups.append(nn.Sequential(
                nn.Upsample(scale_factor=(sz, 2, 2), mode="trilinear", align_corners=False),
                nn.BatchNorm3d(g * deeper), _Conv3d(g, deeper, c, (kz, 3, 3)),
                nn.BatchNorm3d(g * c), _act(),
                _Conv3d(g, c, c, (1, 1, 1)), nn.BatchNorm3d(g * c), _act()))
            cin = c
        self.down, self.up = nn.ModuleList(downs), nn.ModuleList(ups)
        self.head = _Conv3d(g, channels[0], out_channels, (1, 1, 1))
        self.seed_members(seeds)


def pad_volume(volume: np.ndarray, stages: list[tuple[int, int]]) -> tuple[np.ndarray, tuple]:
    """Reflect-pad ``(C, Z, Y, X)`` so every stage divides evenly; returns the crop."""
    mz = int(np.prod([s for _, s in stages]))
    mxy = 2 ** len(stages)
    _, z, y, x = volume.shape
    pads = [(0, 0)]
    crop = []
    for n, m in ((z, mz), (y, mxy), (x, mxy)):
        extra = (-n) % m
        pads.append((extra // 2, extra - extra // 2))
        crop.append(slice(extra // 2, extra // 2 + n))
    mode = "reflect" if min(z, y, x) > 1 else "edge"
    return np.pad(volume, pads, mode=mode), tuple(crop)


def iter_volume_members(volume: np.ndarray, spacing: Sequence[float], *, n_iter: int,
                        seeds: Sequence[int], learning_rate: float, device: torch.device,
                        batch_size: int = 2
                        ) -> Generator[FitProgress, None, np.ndarray]:
    """Fit one 3-D generator per seed to ``volume`` ``(C, Z, Y, X)`` in [0, 1]; returns
    the members' outputs ``(n, C, Z, Y, X)``. Yields progress after every iteration."""
    stages = plan(spacing, volume.shape[1])
    padded, crop = pad_volume(volume, stages)
    c, z, h, w = padded.shape
    target_all = torch.from_numpy(np.ascontiguousarray(padded, np.float32)).to(device)
    batches = member_batches(len(seeds), batch_size)
    total, step, outputs = n_iter * len(batches), 0, []
    for batch in batches:
        g = len(batch)
        member_seeds = [int(seeds[i]) for i in batch]
        net = VolumeGenerator(g, c, member_seeds, stages).to(device)
        noise = make_noise(member_seeds, NOISE_CHANNELS, z, h, w).to(device)
        target = target_all.repeat(g, 1, 1, 1)[None]
        opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
        net.train()
        out = None
        for it in range(n_iter):
            last = it == n_iter - 1
            with torch.set_grad_enabled(not last):
                out = net(noise)
            if not last:
                loss = (out - target).abs().mean(dim=(0, 2, 3, 4)).view(g, c).mean(1).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            step += 1
            yield FitProgress(step, total, None, None)
        full = out.detach()[0].view(g, c, z, h, w)[:, :, crop[0], crop[1], crop[2]]
        outputs.extend(full.unbind(0))
        del net, opt, out, noise, target
    return torch.stack(outputs, 0).cpu().numpy()
