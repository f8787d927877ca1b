"""The networks: the generator of the Deep Segmentation Prior as an ensemble of
independent members, in 2-D (:class:`EnsembleGenerator`) and 3-D (:class:`VolumeGenerator`,
stages planned from the voxel spacing by :func:`z_stages`), its fixed noise inputs, and
the feature network of Kanezaki's self-training (:class:`FeatureNet`).

``EnsembleGenerator(n_members=G, ...)`` is G copies of the "skip" encoder-decoder of
Deep Image Prior with the skip paths switched off (``docs/algorithm.md`` section 2), trained at
once as ONE model: every convolution is grouped (``groups=G``), so member g only ever sees
its own channels. BatchNorm, LeakyReLU, bilinear upsampling and the sigmoid act per
channel, so the grouped model is mathematically G separate networks. Tensor layout:
input ``(1, G * in_channels, H, W)``, output ``(1, G * out_channels, H, W)`` with member
g's output in channels ``g * out_channels : (g + 1) * out_channels``.

Each member's weights are drawn from its own seeded ``torch.Generator`` with PyTorch's
default initialisation for a stand-alone layer, so member g of an ensemble equals a
one-member model built with the same seed.

The volumetric generator has the same stages with 3-D convolutions. Microscope stacks are
usually coarser in z than in y/x, so each stage decides from the voxel size what to do
along z, as nnU-Net does for its pooling: z is halved (stride 2) only while a voxel is no
longer in z than 1.5x its current y/x size, and the z extent of the kernels is 3 while a
voxel is less than twice as long in z as in y/x, else 1 (no mixing of planes that are
far apart).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch import nn

#: Research defaults (docs/algorithm.md section 2).
CHANNELS = (8, 16, 32)
NOISE_CHANNELS = 2
NOISE_SCALE = 0.01


class _MemberInit:
    """For a grouped convolution with ``cin``/``cout`` channels per member: draw member
    g's weights as torch does for a stand-alone layer (any number of dimensions)."""

    cin: int
    cout: int

    @torch.no_grad()
    def init_member(self, g: int, gen: torch.Generator) -> None:
        # torch's default for a stand-alone conv: kaiming_uniform(a=sqrt(5)) on the weight
        # and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) on the bias; both bounds are 1/sqrt(fan_in).
        fan_in = self.cin * math.prod(self.kernel_size)
        bound = 1.0 / math.sqrt(fan_in)
        sl = slice(g * self.cout, (g + 1) * self.cout)
        w = torch.empty(self.weight[sl].shape, dtype=torch.float64)
        b = torch.empty(self.cout, dtype=torch.float64)
        w.uniform_(-bound, bound, generator=gen)
        b.uniform_(-bound, bound, generator=gen)
        self.weight[sl] = w.to(self.weight.dtype)
        self.bias[sl] = b.to(self.bias.dtype)


class _GroupedConv(_MemberInit, nn.Conv2d):
    """A convolution over G members, reflection padded like the research code."""

    def __init__(self, members: int, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__(
            members * cin,
            members * cout,
            kernel,
            stride=stride,
            padding=0,
            groups=members,
            bias=True,
        )
        self.pad = (kernel - 1) // 2
        self.members, self.cin, self.cout = members, cin, cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = nn.functional.pad(x, (self.pad,) * 4, mode="reflect")
        return super().forward(x)


def _bn(members: int, channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(members * channels)


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


class _Down(nn.Sequential):
    def __init__(self, g: int, cin: int, cout: int):
        super().__init__(
            _GroupedConv(g, cin, cout, 3, stride=2),
            _bn(g, cout),
            _act(),
            _GroupedConv(g, cout, cout, 3),
            _bn(g, cout),
            _act(),
        )


class _Up(nn.Sequential):
    def __init__(self, g: int, cin: int, cout: int):
        super().__init__(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            _bn(g, cin),
            _GroupedConv(g, cin, cout, 3),
            _bn(g, cout),
            _act(),
            _GroupedConv(g, cout, cout, 1),
            _bn(g, cout),
            _act(),
        )


class _Generator(nn.Module):
    """Encoder-decoder without skips: ``down`` blocks, ``up`` blocks in reverse, a 1x1
    ``head`` and a sigmoid. Subclasses build the blocks, then call :meth:`seed_members`."""

    down: nn.ModuleList
    up: nn.ModuleList
    head: nn.Module

    def seed_members(self, seeds: Sequence[int]) -> None:
        """Draw member m's weights of every grouped layer from ``seeds[m]``."""
        for m, seed in enumerate(seeds):
            gen = torch.Generator().manual_seed(int(seed))
            for module in self.modules():
                if hasattr(module, "init_member"):
                    module.init_member(m, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.down:
            x = block(x)
        for block in reversed(self.up):
            x = block(x)
        return torch.sigmoid(self.head(x))


class EnsembleGenerator(_Generator):
    """G independent DIP generators (no skips) evaluated as one grouped network.

    Parameters
    ----------
    n_members : int
        Ensemble size G.
    out_channels : int
        Image channels C.
    seeds : sequence of int
        One seed per member for its weights (``len(seeds) == n_members``).
    channels : sequence of int
        Channels per scale, down = up (research default ``(8, 16, 32)``).
    in_channels : int
        Channels of the noise input (2).
    """

    def __init__(
        self,
        n_members: int,
        out_channels: int,
        seeds: Sequence[int],
        channels: Sequence[int] = CHANNELS,
        in_channels: int = NOISE_CHANNELS,
    ):
        super().__init__()
        if len(seeds) != n_members:
            raise ValueError(f"need one seed per member: {n_members} members, {len(seeds)} seeds")
        g = n_members
        self.n_members, self.out_channels, self.in_channels = g, out_channels, in_channels
        downs, ups = [], []
        cin = in_channels
        for i, c in enumerate(channels):
            downs.append(_Down(g, cin, c))
            deeper = channels[i + 1] if i + 1 < len(channels) else c
            ups.append(_Up(g, deeper, c))
            cin = c
        self.down = nn.ModuleList(downs)
        self.up = nn.ModuleList(ups)
        self.head = _GroupedConv(g, channels[0], out_channels, 1)
        self.seed_members(seeds)


def make_noise(seeds: Sequence[int], in_channels: int, *shape: int) -> torch.Tensor:
    """The fixed inputs: per member, U[-0.5, 0.5) * 0.01 drawn from its own seed.

    ``shape`` is ``(height, width)``, or ``(depth, height, width)`` for the volumetric
    generator. Returns a float32 tensor ``(1, G * in_channels, *shape)``.
    """
    parts = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed) + 1)
        parts.append(
            (torch.rand((in_channels, *shape), generator=gen, dtype=torch.float64) - 0.5)
            * NOISE_SCALE
        )
    return torch.cat(parts, 0)[None].float()


def z_stages(
    spacing: Sequence[float], n_planes: int, n_stages: int = len(CHANNELS)
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

    def __init__(
        self,
        n_members: int,
        out_channels: int,
        seeds: Sequence[int],
        stages: list[tuple[int, int]],
        channels: Sequence[int] = CHANNELS,
        in_channels: int = NOISE_CHANNELS,
    ):
        super().__init__()
        g = n_members
        downs, ups = [], []
        cin = in_channels
        for i, (c, (kz, sz)) in enumerate(zip(channels, stages)):
            downs.append(
                nn.Sequential(
                    _Conv3d(g, cin, c, (kz, 3, 3), (sz, 2, 2)),
                    nn.BatchNorm3d(g * c),
                    _act(),
                    _Conv3d(g, c, c, (kz, 3, 3)),
                    nn.BatchNorm3d(g * c),
                    _act(),
                )
            )
            deeper = channels[i + 1] if i + 1 < len(channels) else c
            ups.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=(sz, 2, 2), mode="trilinear", align_corners=False),
                    nn.BatchNorm3d(g * deeper),
                    _Conv3d(g, deeper, c, (kz, 3, 3)),
                    nn.BatchNorm3d(g * c),
                    _act(),
                    _Conv3d(g, c, c, (1, 1, 1)),
                    nn.BatchNorm3d(g * c),
                    _act(),
                )
            )
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


class FeatureNet(nn.Module):
    """Kanezaki's feature network: conv3x3 (C -> F) -> ReLU -> BN, (n_conv - 1) x
    [conv3x3 (F -> F) -> ReLU -> BN], conv1x1 (F -> F) -> BN.

    The weights are drawn from ``generator`` (torch's default initialisation of a
    stand-alone layer), never from the global random state: two runs at once in one
    process (two widgets, two threads) cannot disturb each other.
    """

    def __init__(
        self,
        in_channels: int,
        n_features: int = 100,
        n_conv: int = 2,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for _ in range(n_conv):
            layers += [
                _SeededConv(cin, n_features, 3, padding=1, generator=generator),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(n_features),
            ]
            cin = n_features
        layers += [
            _SeededConv(n_features, n_features, 1, generator=generator),
            nn.BatchNorm2d(n_features),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _SeededConv(nn.Conv2d):
    """A convolution initialised like torch's default, from a given generator."""

    def __init__(self, *args, generator: Optional[torch.Generator] = None, **kwargs):
        self._generator = generator if generator is not None else torch.Generator()
        super().__init__(*args, **kwargs)
        del self._generator

    @torch.no_grad()
    def reset_parameters(self) -> None:
        gen = getattr(self, "_generator", None)
        if gen is None:  # pragma: no cover - only when re-initialised later
            return super().reset_parameters()
        bound = 1.0 / math.sqrt(self.in_channels // self.groups * math.prod(self.kernel_size))
        self.weight.uniform_(-bound, bound, generator=gen)
        if self.bias is not None:
            self.bias.uniform_(-bound, bound, generator=gen)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
