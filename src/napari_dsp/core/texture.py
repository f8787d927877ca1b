"""Texture channels: what the texture-aware prior (``texture=True``) fits next to the
image, so that regions of the same brightness but different texture become different
flat blobs.

:func:`texture_channels` filters the image's luminance with a bank of complex Gabor
filters (4 scales, 0.05 to 0.35 cycles per pixel, one octave wide, 4 orientations), takes
each response's magnitude (the local energy in that band: high in a region whose texture
has that scale and orientation, whatever its phase), integrates it at two scales
(:data:`SCALES`: over half the filter's width, which keeps borders sharp, and over twice
it, over which a texture of large texels such as blobs has steady statistics),
compresses it (``log(1 + e / mean e)``) and standardises the 32 energies. The local mean
of the luminance at the coarsest band's two scales (:func:`local_means`) joins them, in
units of the luminance's standard deviation (a brightness step between regions counts
for what it is against the image's contrast); the first principal components of all 34
are kept, each stretched to [0, 1]. The filtering runs in torch, in
the Fourier domain (one FFT of the reflect-padded image, one product and inverse FFT per
band, one per band and scale for the integration; one more FFT for the local means), on
the device of the fit, in float32, the image mirrored on every side by as far as the
widest Gaussian reaches (3 sigma), so that no filter wraps round to the opposite edge;
the principal components (a 34 x 34 eigenproblem, on a fixed sample of
:data:`PCA_SAMPLE` pixels) and the stretch in numpy. They are
computed once, at full resolution, before the fit's working size and tiles.

Every channel is stretched to [0, 1] however weak its texture: on a field of noise the
channels show the noise's own fluctuations at full contrast, and K-means finds "regions"
in them. So a foreground/background split is believed only where its two classes differ
in some band's (unstretched) energy by :data:`MIN_SEPARATION` pooled within-class
standard deviations or more (:func:`separation`), or in intensity as the intensity
noise test says (:mod:`napari_dsp.core.decide`). Measured: fields of noise (Poisson at
96² and 256², Gaussian, smoothed Gaussian) at most 1.4 where K-means split them at all;
procedural texture mosaics that were segmented 7.4-11.2 (a failing one: 0.99).

Measured on procedural and photographed mosaics (``benchmarks/bench_textures.py``),
K-means on these channels' prior separates textures that the intensity prior merges, and
beats Gabor-energy K-means; on photographed textures the prior also beats the same
channels clustered without it.
Nothing here knows about napari, Qt or files.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: Centre frequencies of the bank (cycles per pixel) and orientations per frequency.
FREQUENCIES = (0.05, 0.1, 0.2, 0.35)
ORIENTATIONS = 4
#: Principal components kept (texture channels fitted next to the image).
COMPONENTS = 6
#: Gaussian envelope: sigma = SIGMA_CYCLES / frequency (about one octave of bandwidth).
SIGMA_CYCLES = 0.56
#: Each energy is smoothed with a Gaussian of SMOOTH x its filter's sigma.
SMOOTH = 0.5
#: The texture channels integrate each energy at two scales (x its filter's sigma): a
#: local one that keeps borders sharp, and a regional one over which a texture of large
#: texels (blobs, grain) has steady statistics.
SCALES = (SMOOTH, 2.0)
#: The local mean of the luminance (the first-order statistic, next to the energies'
#: second-order ones) joins them at the coarsest band's integration scales.
MEAN_SCALES = SCALES
#: Pixels that give the standardisation and principal axes (a fixed sample above this).
PCA_SAMPLE = 200_000
#: Smallest texture separation (pooled within-class standard deviations) believed.
MIN_SEPARATION = 4.0


def _freq_grid(h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.fftfreq(w, device=device)[None, :]
    return fy.expand(h, w), fx.expand(h, w)


def _gaussian(f2: torch.Tensor, sigma: float) -> torch.Tensor:
    """The Fourier transform of a unit-sum Gaussian of ``sigma`` pixels, on the squared
    frequencies ``f2`` of :func:`_freq_grid`."""
    return torch.exp(-2 * math.pi**2 * sigma**2 * f2)


def _reflected(gray: np.ndarray, pad: int, device) -> torch.Tensor:
    """``gray`` mirrored by ``pad`` pixels on every side (repeatedly where the image is
    smaller than that), as a float32 tensor: the FFT filtering's domain, wide enough
    that no Gaussian reaches round to the opposite edge."""
    x = np.pad(np.asarray(gray, np.float32), pad, mode="reflect")
    return torch.as_tensor(x, device=device)


def gabor_energies(gray: np.ndarray, device="cpu", smooth=SMOOTH) -> np.ndarray:
    """The Gabor energies of a ``(Y, X)`` image in [0, 1], each smoothed with a Gaussian of
    ``smooth`` x its filter's sigma and log-compressed:
    ``(len(FREQUENCIES) * ORIENTATIONS, Y, X)`` float32. With a sequence of ``smooth``
    values, every band at each of them (each band filtered once):
    ``(len(smooth) * bands, Y, X)``, scale by scale."""
    smooths = tuple(smooth) if np.ndim(smooth) else (smooth,)
    h, w = gray.shape
    # the coarsest filter's reach plus its widest integration's (3 sigma each)
    pad = math.ceil(3 * (1 + max(smooths)) * SIGMA_CYCLES / FREQUENCIES[0])
    x = _reflected(gray, pad, device)
    x = x - x.mean()
    ph, pw = x.shape
    spectrum = torch.fft.fft2(x)
    fy, fx = _freq_grid(ph, pw, device)
    f2 = fy**2 + fx**2
    bands = len(FREQUENCIES) * ORIENTATIONS
    e = torch.empty((len(smooths) * bands, h, w), dtype=torch.float32, device=device)
    b = 0
    for f in FREQUENCIES:
        sigma = SIGMA_CYCLES / f
        sf = 1.0 / (2 * math.pi * sigma)  # the envelope's width in frequency
        windows = [_gaussian(f2, s * sigma) for s in smooths]
        for k in range(ORIENTATIONS):
            theta = k * math.pi / ORIENTATIONS
            cy, cx = f * math.sin(theta), f * math.cos(theta)
            band = torch.exp(-((fy - cy) ** 2 + (fx - cx) ** 2) / (2 * sf**2))
            energy = torch.fft.ifft2(spectrum * band).abs()  # one-sided: |analytic response|
            energy = torch.fft.fft2(energy)
            for i, window in enumerate(windows):  # scale by scale
                smoothed = torch.fft.ifft2(energy * window).real.clamp_min_(0)
                e[i * bands + b] = smoothed[pad : pad + h, pad : pad + w]
            b += 1
    e.div_(e.mean(dim=(1, 2), keepdim=True).clamp_min(1e-12)).log1p_()
    return e.float().cpu().numpy()


def local_means(gray: np.ndarray, device="cpu") -> np.ndarray:
    """The local mean of a ``(Y, X)`` image over the coarsest band's integration scales
    (Gaussians of :data:`MEAN_SCALES` x its filter's sigma, reflect-padded):
    ``(len(MEAN_SCALES), Y, X)`` float32."""
    h, w = gray.shape
    sigma = SIGMA_CYCLES / FREQUENCIES[0]
    pad = math.ceil(3 * max(MEAN_SCALES) * sigma)  # the widest Gaussian's reach
    x = _reflected(gray, pad, device)
    spectrum = torch.fft.fft2(x)
    fy, fx = _freq_grid(*x.shape, device)
    f2 = fy**2 + fx**2
    out = torch.stack(
        [
            torch.fft.ifft2(spectrum * _gaussian(f2, s * sigma)).real[pad : pad + h, pad : pad + w]
            for s in MEAN_SCALES
        ]
    )
    return out.float().cpu().numpy()


def texture_channels(chw: np.ndarray, n_components: int = COMPONENTS, device="cpu") -> np.ndarray:
    """Texture channels of a normalised ``(C, Y, X)`` image in [0, 1]:
    ``(n_components, Y, X)`` float32 in [0, 1], the first principal components of the
    standardised Gabor energies of its luminance (mean over channels) and of its local
    means (:func:`local_means`, in units of the luminance's standard deviation), each
    stretched between its 0.5 and 99.5 percentiles. Signs are fixed (the largest loading
    positive), so the same image always gives the same channels."""
    chw = np.asarray(chw)
    if chw.ndim != 3 or min(chw.shape[1:]) < 2:
        raise ValueError(f"texture_channels needs a (C, Y, X) image, got shape {chw.shape}")
    if not np.all(np.isfinite(chw)):
        raise ValueError("texture_channels: the image contains NaN or infinite values")
    gray = chw.mean(0)
    # Two blocks of features, energies and local means, kept apart (no copy of the
    # energies, the largest array here).
    blocks = [
        b.reshape(len(b), -1)
        for b in (gabor_energies(gray, device, SCALES), local_means(gray, device))
    ]
    n = gray.size
    # Standardisation and principal axes from a fixed sample of pixels (all of them up
    # to PCA_SAMPLE): memory stays at the energies' own size.
    pick = (
        np.sort(np.random.default_rng(0).choice(n, PCA_SAMPLE, replace=False))
        if n > PCA_SAMPLE
        else slice(None)
    )
    sample = np.concatenate([b[:, pick] for b in blocks]).astype(np.float64)
    mean = sample.mean(1, keepdims=True)
    std = sample.std(1, keepdims=True)
    # The local means count in units of the luminance's standard deviation, not their
    # own: a brightness step between regions weighs what it is against the image's
    # contrast, and the flat remainder of equal-brightness textures stays small instead
    # of being blown up to the weight of a real difference.
    std[len(blocks[0]) :] = gray.std(dtype=np.float64)
    std = np.where(std > 1e-12, std, 1.0)
    z = (sample - mean) / std
    values, vectors = np.linalg.eigh(z @ z.T / z.shape[1])
    order = np.argsort(values)[::-1][:n_components]
    axes = vectors[:, order]
    axes *= np.where(axes[np.abs(axes).argmax(0), range(axes.shape[1])] < 0, -1.0, 1.0)
    weights = (axes / std).T  # (k, features): projection of the standardised features
    offset = weights @ mean
    split = np.split(weights, [len(blocks[0])], axis=1)
    comps = np.empty((len(weights), n), np.float64)
    for start in range(0, n, PCA_SAMPLE):  # in float64, a block of pixels at a time
        part = slice(start, start + PCA_SAMPLE)
        comps[:, part] = (
            sum(w @ b[:, part].astype(np.float64) for w, b in zip(split, blocks)) - offset
        )
    comps = comps.reshape(-1, *chw.shape[1:])
    lo, hi = np.percentile(comps, [0.5, 99.5], axis=(1, 2), keepdims=True)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    return np.clip((comps - lo) / span, 0, 1).astype(np.float32)


def separation(chw: np.ndarray, labels: np.ndarray, device="cpu") -> float:
    """How far apart the classes of ``labels`` ``(Y, X)`` lie in texture: the largest,
    over the bank's bands and pairs of classes, difference of the classes' mean energy
    in units of their pooled within-class standard deviation (energies of the
    luminance of the normalised ``(C, Y, X)`` image, not stretched)."""
    e = gabor_energies(np.asarray(chw).mean(0), device).reshape(-1, labels.size)
    flat = np.asarray(labels).reshape(-1)
    classes = [flat == u for u in np.unique(flat)]
    best = 0.0
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            a, b = e[:, classes[i]], e[:, classes[j]]
            na, nb = a.shape[1], b.shape[1]
            pooled = np.sqrt((a.var(1) * na + b.var(1) * nb) / (na + nb))
            d = np.abs(a.mean(1) - b.mean(1)) / np.maximum(pooled, 1e-12)
            best = max(best, float(d.max()))
    return best
