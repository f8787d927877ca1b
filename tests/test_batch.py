"""Batches a microscopist can trust: the command line run as a subprocess on real files in
temporary folders (axes from OME and ImageJ metadata, compressed TIFFs, outputs planned
up front, overwrite rules, signals, umask, header-only refusals)."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

from napari_dsp import io
from napari_dsp.cli import main
from napari_dsp.io import temps as io_temps
from tests.fast import TINY_FLAGS
from tests.synthetic import dark_on_bright

FAST = [*TINY_FLAGS, "--quiet"]


#: Peak memory of a fresh process: VmHWM (getrusage's ru_maxrss would carry over the
#: peak of the forking pytest process through exec).
PEAK = (
    "def peak():\n    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            return int(line.split()[1]) * 1024\n"
)


class StreamReader:
    """A child's output read in a thread as it comes, so a test can wait for a line (a
    condition with a deadline, never a sleep)."""

    def __init__(self, stream):
        import threading

        self._parts: list = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        while chunk := stream.read(1):
            with self._cond:
                self._parts.append(chunk)
                self._cond.notify_all()

    def text(self) -> str:
        self._thread.join(timeout=60)
        with self._cond:
            return "".join(self._parts)

    def wait_for(self, condition, proc, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition("".join(self._parts)):
                left = deadline - time.monotonic()
                assert proc.poll() is None and left > 0, "".join(self._parts)
                self._cond.wait(min(left, 1.0))


def cli(*args, umask=None, timeout=300):
    """Run ``napari-dsp`` in a fresh process, as a user does."""
    return subprocess.run(
        [sys.executable, "-m", "napari_dsp.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


def disc(shape=(32, 40), seed=0):
    image, mask = dark_on_bright(shape, seed=seed)
    return (image * 1000).astype(np.uint16), mask


def no_traceback(proc):
    assert "Traceback" not in proc.stderr, proc.stderr


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


# ------------------------------------------------------------------ axes from metadata
def test_ome_zcyx_is_a_stack_of_two_channel_planes(tmp_path):
    """Before: 8 "planes" with --stack (the channels taken as Z). Now: 4 planes of two
    channels, without --stack, with the input's pixel size in the labels."""
    planes, masks = zip(*(disc(seed=z) for z in range(4)))
    data = np.stack([np.stack([p, p // 2]) for p in planes])  # (Z, C, Y, X)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        photometric="minisblack",
        metadata={"axes": "ZCYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 1.0},
    )
    out = tmp_path / "out"
    proc = cli("segment", path, "-o", out, *FAST)
    assert proc.returncode == 0, proc.stderr
    labels_path = out / "cells_labels.tif"
    info = io.read_info(labels_path)
    assert info.axes == "ZYX" and info.shape == (4, 32, 40) and info.dtype == np.uint8
    assert info.pixel_size == pytest.approx({"Z": 1.0, "Y": 0.2, "X": 0.2})
    labels = io.read_pixels(info)
    for z in range(4):  # every plane is the disc, not a channel's complement
        assert iou(labels[z] == 1, masks[z]) > 0.7
    meta = json.loads((out / "cells_labels.json").read_text())
    assert meta["file"]["axes_from"] == "metadata" and meta["file"]["axes_used"] == "ZCYX"
    assert meta["stack"]["n_planes"] == 4


def test_imagej_hyperstack_volumetric_takes_the_voxel_size_from_the_file(tmp_path):
    volume = np.stack([disc((32, 32), seed=z)[0] for z in range(4)])
    path = tmp_path / "vol.tif"
    tifffile.imwrite(
        path,
        volume,
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "ZYX", "spacing": 1.5, "unit": "micron"},
    )
    out = tmp_path / "o"
    proc = cli("segment", path, "-o", out, "--volumetric", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "voxel size 1.5 x 0.5 x 0.5 µm (z, y, x) from the file's metadata" in proc.stderr
    meta = json.loads((out / "vol_labels.json").read_text())
    assert meta["fit"]["spacing"] == [1.5, 0.5, 0.5]
    info = io.read_info(out / "vol_labels.tif")
    assert info.pixel_size == pytest.approx({"Z": 1.5, "Y": 0.5, "X": 0.5})


def test_lzw_and_rgb_png_with_alpha_read_and_a_prior_written_with_channels(tmp_path):
    image, mask = disc((40, 48))
    tifffile.imwrite(tmp_path / "lzw.tif", image, compression="lzw")
    rgba = np.zeros((40, 48, 4), np.uint8)
    rgba[..., :3] = (image[..., None] // 4).clip(0, 255)
    rgba[..., 3] = 255
    from PIL import Image

    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = tmp_path / "o"
    proc = cli("segment", tmp_path / "lzw.tif", tmp_path / "rgba.png", "-o", out, "--prior", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "2 done, 0 skipped (outputs exist), 0 failed" in proc.stderr
    assert iou(tifffile.imread(out / "lzw_labels.tif") == 1, mask) > 0.7
    with tifffile.TiffFile(out / "rgba_prior.tif") as tif:  # alpha dropped, channels C
        assert tif.series[0].axes == "CYX" and tif.series[0].shape == (3, 40, 48)


def test_a_file_without_axes_says_what_was_assumed(tmp_path):
    np.save(tmp_path / "z.npy", np.stack([disc(seed=z)[0] for z in range(3)]))
    proc = cli("segment", tmp_path / "z.npy", "-o", tmp_path / "o", "--stack", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "a .npy file has no axes: its leading axis was taken as Z planes" in proc.stderr
    meta = json.loads((tmp_path / "o" / "z_labels.json").read_text())
    assert meta["file"]["axes_from"] == "assumed"
    assert "taken as Z planes" in meta["file"]["notes"][0]


# ------------------------------------------------------------------- planned batches
def test_texture_prior_names_never_meet_another_inputs_outputs(tmp_path):
    """Inputs a and a_texture with --prior --texture: every output name is distinct, so
    the batch is planned (a's texture prior must not take a_texture's prior name)."""
    from napari_dsp.batch import plan_batch

    for name in ("a.tif", "a_texture.tif"):
        tifffile.imwrite(tmp_path / name, disc()[0])
    jobs, _ = plan_batch(
        [tmp_path / "a.tif", tmp_path / "a_texture.tif"], tmp_path / "o", prior=True, texture=True
    )
    names = [p.name for job in jobs for p in job.outputs]
    assert len(names) == len(set(names)) == 8
    assert "a_prior_texture.tif" in names and "a_texture_prior.tif" in names


def test_same_stem_inputs_are_refused_before_computing(tmp_path):
    for well, suffix in (("wellA", ".png"), ("wellB", ".tif")):
        (tmp_path / well).mkdir()
        path = tmp_path / well / f"img{suffix}"
        if suffix == ".png":
            from PIL import Image

            Image.fromarray((disc()[0] // 8).astype(np.uint8)).save(path)
        else:
            tifffile.imwrite(path, disc()[0])
    out = tmp_path / "out"
    for extra in ([], ["--overwrite"]):
        proc = cli(
            "segment",
            tmp_path / "wellA" / "img.png",
            tmp_path / "wellB" / "img.tif",
            "-o",
            out,
            *extra,
            *FAST,
        )
        assert proc.returncode == 2
        assert "nothing was computed" in proc.stderr
        assert (
            "wellA/img.png and " in proc.stderr
            and "wellB/img.tif would all write" in proc.stderr
            and "img_labels.tif" in proc.stderr
        )
        no_traceback(proc)
        assert not out.exists()


def test_an_output_that_would_replace_an_input_is_refused(tmp_path):
    """Before: ``cell.tif cell_labels.tif -o in/ --overwrite`` replaced the second input
    (a ground truth) with the first input's result."""
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "cell.tif", disc()[0])
    truth = folder / "cell_labels.tif"
    tifffile.imwrite(truth, disc()[1].astype(np.uint8))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    proc = cli("segment", folder / "cell.tif", truth, "-o", folder, "--overwrite", *FAST)
    assert proc.returncode == 2
    assert f"{truth} (an output of {folder / 'cell.tif'}) would replace the input" in proc.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_overwrite_covers_every_output_and_the_summary_is_true(tmp_path):
    for name in ("a", "b", "c"):
        tifffile.imwrite(tmp_path / f"{name}.tif", disc(seed=ord(name))[0])
    out = tmp_path / "o"
    out.mkdir()
    (out / "b_labels.json").write_text("my notes")  # only the sidecar exists
    (out / "c_prior.tif").write_text("my prior")  # only the prior exists
    broken = tmp_path / "d.tif"
    broken.write_bytes(b"II*\x00broken")
    args = ["segment", *(tmp_path / f"{n}.tif" for n in "abcd"), "-o", out, "--prior", *FAST]
    proc = cli(*args)
    assert proc.returncode == 1
    assert "1 done, 2 skipped (outputs exist), 1 failed" in proc.stderr
    assert (out / "b_labels.json").read_text() == "my notes"
    assert (out / "c_prior.tif").read_text() == "my prior"
    assert not (out / "b_labels.tif").exists() and not (out / "c_labels.tif").exists()
    proc = cli(*args, "--overwrite")
    assert "3 done, 0 skipped (outputs exist), 1 failed" in proc.stderr
    assert json.loads((out / "b_labels.json").read_text())["input_file"].endswith("b.tif")
    assert tifffile.imread(out / "c_prior.tif").dtype == np.float32
    assert proc.stderr.count("napari-dsp: error:") == 1  # one line for the broken file


def test_long_names_are_checked_up_front(tmp_path):
    ok = tmp_path / ("n" * 235 + ".tif")  # labels name 246 bytes: legal, and works
    tifffile.imwrite(ok, disc()[0])
    proc = cli("segment", ok, "-o", tmp_path / "o", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "o" / ("n" * 235 + "_labels.tif")).name) == 246
    long = tmp_path / ("m" * 246 + ".tif")
    tifffile.imwrite(long, disc()[0])
    t0 = time.perf_counter()
    proc = cli("segment", long, "-o", tmp_path / "o2", *FAST)
    assert proc.returncode == 2 and "is 257 bytes long; the file system allows 255" in proc.stderr
    assert "nothing was computed" in proc.stderr and time.perf_counter() - t0 < 20


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_follow_the_umask(tmp_path, umask):
    tifffile.imwrite(tmp_path / "a.tif", disc()[0])
    out = tmp_path / "o"
    proc = cli("segment", tmp_path / "a.tif", "-o", out, "--prior", *FAST, umask=umask)
    assert proc.returncode == 0, proc.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == dict.fromkeys(["a_labels.tif", "a_prior.tif", "a_labels.json"], 0o666 & ~umask)


def test_header_only_refusal_of_a_huge_file(tmp_path):
    """A 30000 x 30000 TIFF of under a megabyte is refused from its header: before, it
    was decoded (1.2 GB, 10 s) first. The peak memory of the whole run is measured."""
    path = tmp_path / "huge.tif"
    n = -(-30000 // 1024)
    tile = np.zeros((1024, 1024), np.uint8)
    tifffile.imwrite(
        path,
        (tile for _ in range(n * n)),
        shape=(30000, 30000),
        dtype=np.uint8,
        tile=(1024, 1024),
        compression="zlib",
    )
    code = (
        PEAK + "import sys\nfrom napari_dsp.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print('PEAK', peak(), "
        "'TORCH', 'torch' in sys.modules)\nsys.exit(rc)"
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, "segment", str(path), "-o", str(tmp_path / "o"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.perf_counter() - t0
    assert proc.returncode == 1
    assert (
        "30000x30000 = 900,000,000 pixels per plane is above --max-pixels 67,200,000" in proc.stderr
    )
    peak = int(proc.stdout.split()[1])
    assert peak < 300e6, f"peak {peak / 1e6:.0f} MB"
    assert "TORCH False" in proc.stdout and took < 30
    no_traceback(proc)


def test_a_constant_file_is_refused_before_normalising(tmp_path):
    path = tmp_path / "blank.tif"
    tifffile.imwrite(path, np.zeros((2000, 2000), np.uint16), compression="zlib")
    proc = cli("segment", path, "-o", tmp_path / "o", *FAST)
    assert proc.returncode == 1 and "blank.tif: is constant (every pixel is 0)" in proc.stderr


# --------------------------------------------------------------------- signals, faults
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_real_batch_like_ctrl_c(tmp_path, sig):
    for i in range(3):
        tifffile.imwrite(tmp_path / f"s{i}.tif", disc((64, 64), seed=i)[0])
    out = tmp_path / "o"
    args = [
        "segment",
        *(str(tmp_path / f"s{i}.tif") for i in range(3)),
        "-o",
        str(out),
        "--members",
        "2",
        "--iterations",
        "400",
        "--threads",
        "1",
        "--seed",
        "0",
        "--prior",
    ]
    # The command line leaves a signal alone where it was ignored when it started (as
    # under nohup, which ignores SIGHUP, and so would this child of a suite run under
    # it): the child restores the default first, as a plain shell would have it.
    start = (
        f"import runpy, signal, sys; signal.signal({int(sig)}, signal.SIG_DFL); "
        f"sys.argv = ['napari-dsp'] + {args!r}; "
        f"runpy.run_module('napari_dsp.cli', run_name='__main__')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", start], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    err_seen = StreamReader(proc.stderr)
    try:
        # the first file is finished and the second one's fit reports (its progress line)
        err_seen.wait_for(lambda text: "[2/3] s1.tif [" in text, proc, timeout=240)
        assert (out / "s0_labels.tif").exists()
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err_seen.text()
    assert proc.returncode == 128 + sig, err
    assert (
        f"stopped by {signal.Signals(sig).name}; 1 of 3 file(s) finished, their outputs "
        f"complete; the other 2 were not written by this run"
    ) in err
    assert "Traceback" not in err
    names = sorted(p.name for p in out.iterdir())  # hidden temporary files included
    assert names == ["s0_labels.json", "s0_labels.tif", "s0_prior.tif"]
    assert tifffile.imread(out / "s0_labels.tif").shape == (64, 64)


def test_a_killed_runs_temp_file_is_removed_by_the_next_run(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", disc()[0])
    out = tmp_path / "o"
    out.mkdir()
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stale = out / f".napari-dsp-{io_temps.host_tag()}-{victim.pid}-0a1b2c.part"
    stale.write_bytes(b"\0" * 1000)
    victim.kill()
    victim.wait()
    proc = cli("segment", tmp_path / "a.tif", "-o", out, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "removed 1 unfinished temporary file(s) a stopped run left" in proc.stderr
    assert not stale.exists()


def test_any_failure_of_one_file_is_one_line_and_the_batch_goes_on(tmp_path, monkeypatch, capsys):
    from napari_dsp import api

    real = api.segment
    failures = iter(
        [
            ZeroDivisionError("division by zero"),
            MemoryError(),
            RuntimeError("CUDA error: device-side assert\nmore"),
        ]
    )

    def flaky(image, **kwargs):
        if image.shape[1] == 33:
            raise next(failures)
        return real(image, **kwargs)

    monkeypatch.setattr(api, "segment", flaky)
    for i in range(3):
        tifffile.imwrite(tmp_path / f"bad{i}.tif", disc((32, 33), seed=i)[0])
    tifffile.imwrite(tmp_path / "good.tif", disc()[0])
    inputs = [str(tmp_path / f"bad{i}.tif") for i in range(3)] + [str(tmp_path / "good.tif")]
    code = main(["segment", *inputs, "-o", str(tmp_path / "o"), *FAST])
    err = capsys.readouterr().err
    assert code == 1
    assert "bad0.tif: unexpected ZeroDivisionError (division by zero); please report" in err
    assert "bad1.tif: out of memory" in err
    assert "bad2.tif: the fit failed (CUDA error: device-side assert); try" in err
    assert "1 done, 0 skipped (outputs exist), 3 failed" in err
    assert len(err.strip().splitlines()) == 4
    assert (tmp_path / "o" / "good_labels.tif").exists()


@pytest.mark.parametrize(
    "flag",
    [["--max-pixels", "nan"], ["--spacing", "nan", "1", "1"], ["--continuity-weight", "inf"]],
)
def test_non_finite_numbers_are_refused_by_the_command_line(tmp_path, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path), *flag])
    assert exit_.value.code == 2
    assert "is not a finite number" in capsys.readouterr().err


def test_output_names_that_cannot_be_a_label_file_are_refused(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", disc()[0])
    for name in ("result.png", "result.npy", "result.json"):
        assert main(["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path / name), *FAST]) == 2
        assert "label images are written as TIFF" in capsys.readouterr().err
        assert not (tmp_path / name).exists()
    tifffile.imwrite(tmp_path / "b.tif", disc()[0])
    assert (
        main(
            [
                "segment",
                str(tmp_path / "a.tif"),
                str(tmp_path / "b.tif"),
                "-o",
                str(tmp_path / "both.tif"),
                *FAST,
            ]
        )
        == 2
    )
    assert "names one file, but 2 inputs were given" in capsys.readouterr().err


def test_case_insensitive_file_systems_see_same_name_collisions(tmp_path, monkeypatch):
    from napari_dsp import batch

    for folder, name in (("A", "Cell.tif"), ("B", "cell.tif")):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / name, disc()[0])
    inputs = [tmp_path / "A" / "Cell.tif", tmp_path / "B" / "cell.tif"]
    jobs, _ = batch.plan_batch(inputs, tmp_path / "out")  # case-sensitive here: fine
    assert len(jobs) == 2
    monkeypatch.setattr(batch, "probe_folder", lambda folder: (None, True))  # macOS, exFAT
    with pytest.raises(batch.BatchError, match="would all write"):
        batch.plan_batch(inputs, tmp_path / "out")


def test_unwritable_output_folder_is_found_before_computing(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", disc()[0])
    (tmp_path / "blocker").write_text("a file")
    proc = cli("segment", tmp_path / "a.tif", "-o", tmp_path / "blocker" / "out", *FAST)
    assert proc.returncode == 2
    assert "blocker is a file, so the folder" in proc.stderr
    assert "nothing was computed" in proc.stderr


def test_inputs_that_look_like_earlier_outputs_get_a_hint(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", disc()[0])
    assert main(["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path), *FAST]) == 0
    # `napari-dsp segment data/*.tif -o data/` again: the glob now holds a_labels.tif
    code = main(
        [
            "segment",
            str(tmp_path / "a.tif"),
            str(tmp_path / "a_labels.tif"),
            "-o",
            str(tmp_path),
            *FAST,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "look like an earlier run's outputs" in err


def test_volumetric_refuses_time_series_and_single_planes(tmp_path):
    movie = np.stack([disc(seed=t)[0] for t in range(3)])
    tifffile.imwrite(tmp_path / "movie.tif", movie, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "plane.tif", movie[0], imagej=True)
    proc = cli(
        "segment",
        tmp_path / "movie.tif",
        tmp_path / "plane.tif",
        "-o",
        tmp_path / "o",
        "--volumetric",
        *FAST,
    )
    assert proc.returncode == 1
    assert "movie.tif: is a time series (axes TYX); --volumetric fits one Z stack" in proc.stderr
    assert "plane.tif: is a single plane (axes YX); --volumetric needs a Z stack" in proc.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_prior_flag_without_a_prior_writes_and_names_none(tmp_path, capsys):
    from tests.synthetic import textured_regions

    image, _ = textured_regions(3, size=48, seed=0)
    np.save(tmp_path / "img.npy", image)
    out = tmp_path / "o"
    out.mkdir()
    (out / "img_prior.tif").write_text("an older run's prior")
    code = main(
        [
            "segment",
            str(tmp_path / "img.npy"),
            "-o",
            str(out),
            "--method",
            "kanezaki",
            "--no-prior-superpixels",
            "--max-iter",
            "20",
            "--quiet",
            "--prior",
            "--seed",
            "0",
        ]
    )
    assert code == 0
    assert "--prior: this run computes no prior (--no-prior-superpixels)" in capsys.readouterr().err
    meta = json.loads((out / "img_labels.json").read_text())
    assert meta["prior_file"] is None
    assert (out / "img_prior.tif").read_text() == "an older run's prior"


def test_nohup_keeps_a_run_alive_after_sighup(tmp_path):
    """A signal set to be ignored (nohup, a background job) stays ignored: SIGHUP in the
    middle of a fit does not stop it; SIGTERM still does."""
    tifffile.imwrite(tmp_path / "a.tif", disc((64, 64))[0])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "napari_dsp.cli",
            "segment",
            str(tmp_path / "a.tif"),
            "-o",
            str(tmp_path / "o"),
            "--members",
            "2",
            "--iterations",
            "5000",
            "--threads",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    err_seen = StreamReader(proc.stderr)
    try:
        # fitting: its progress line reports iterations
        err_seen.wait_for(lambda text: "iteration" in text, proc, timeout=120)
        proc.send_signal(signal.SIGHUP)
        # Then SIGTERM at once. A SIGHUP that was handled would be handled first (Python
        # runs pending handlers in signal-number order) and exit with 128 + SIGHUP; an
        # ignored one never reaches the process, which goes on until SIGTERM stops it.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err_seen.text()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "SIGHUP" not in err


def test_outputs_keep_the_files_calibration_and_axis_order(tmp_path):
    """Labels of a ZTYX OME-TIFF are written (and described in the sidecar) in ImageJ's
    order TZYX, with the file's calibration."""
    data = np.stack([np.stack([disc(seed=z + t)[0] for t in range(2)]) for z in range(3)])
    path = tmp_path / "ztyx.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={"axes": "ZTYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 2.0},
    )
    proc = cli("segment", path, "-o", tmp_path / "o", *FAST)
    assert proc.returncode == 0, proc.stderr
    info = io.read_info(tmp_path / "o" / "ztyx_labels.tif")
    assert info.axes == "TZYX" and info.shape == (2, 3, 32, 40)
    assert info.pixel_size == pytest.approx({"Z": 2.0, "Y": 0.3, "X": 0.3})
    meta = json.loads((tmp_path / "o" / "ztyx_labels.json").read_text())
    assert meta["file"]["labels_axes"] == "TZYX"


def test_an_ome_tif_output_name_gets_an_ome_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", disc()[0])
    assert (
        main(["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path / "res.ome.tif"), *FAST]) == 0
    )
    assert io.read_info(tmp_path / "res.ome.tif").format == "ome-tiff"
    assert (tmp_path / "res.json").exists()


def test_a_folder_in_the_place_of_an_output_is_found_before_computing(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", disc()[0])
    (tmp_path / "o" / "a_labels.tif").mkdir(parents=True)
    code = main(
        ["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path / "o"), "--overwrite", *FAST]
    )
    assert code == 2 and "a_labels.tif is a folder" in capsys.readouterr().err


def test_flag_combinations_refused_up_front(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", disc()[0])
    tifffile.imwrite(tmp_path / "s.tif", np.ones((32, 40), np.uint8))
    assert (
        main(
            [
                "segment",
                str(tmp_path / "a.tif"),
                "-o",
                str(tmp_path / "o"),
                "--scribbles",
                str(tmp_path / "s.tif"),
                *FAST,
            ]
        )
        == 2
    )
    assert "--scribbles guides --method kanezaki" in capsys.readouterr().err
    for bad in ("0", "-1"):
        with pytest.raises(SystemExit):
            main(
                ["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path / "o"), "--max-pixels", bad]
            )
        assert "is not a positive number" in capsys.readouterr().err
    # hunt (left out): --spacing without --volumetric was ignored without a word
    a = str(tmp_path / "a.tif")
    assert main(["segment", a, "-o", str(tmp_path / "o"), "--spacing", "2", "1", "1", *FAST]) == 2
    assert "add --volumetric, or leave out --spacing" in capsys.readouterr().err
    # and a setting's refusal names the flag, not the API's setting
    assert main(["segment", a, "-o", str(tmp_path / "o"), "--iterations", "0", "--quiet"]) == 2
    assert capsys.readouterr().err == "napari-dsp: error: --iterations must be at least 1, got 0\n"
    assert not (tmp_path / "o").exists()


def test_animated_png_says_which_frame_is_used(tmp_path):
    from PIL import Image

    frames = [Image.fromarray((disc(seed=i)[0] // 8).astype(np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    info = io.read_info(tmp_path / "anim.png")
    assert info.notes == ("the file has 3 frames; the first is used",)


def test_a_set_left_by_a_run_killed_while_placing_its_outputs_is_redone(tmp_path, capsys):
    """The labels are placed last; a run killed before them leaves napari-dsp's own
    prior and sidecar for that input. The next run redoes that input instead of taking
    it as done for ever; an earlier complete run, or anyone else's file, is left alone."""
    tifffile.imwrite(tmp_path / "a.tif", disc(seed=1)[0])
    tifffile.imwrite(tmp_path / "b.tif", disc(seed=2)[0])
    out = tmp_path / "o"
    args = [
        "segment",
        str(tmp_path / "a.tif"),
        str(tmp_path / "b.tif"),
        "-o",
        str(out),
        "--prior",
        *FAST,
    ]
    assert main(args) == 0
    reference = tifffile.imread(out / "a_labels.tif")
    (out / "a_labels.tif").unlink()  # killed after the prior and the sidecar: a's set
    (out / "b_labels.tif").unlink()
    (out / "b_labels.json").unlink()  # killed after the prior only: b's set
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "2 done, 0 skipped" in err, err
    assert "was stopped before its labels were written" in err
    np.testing.assert_array_equal(tifffile.imread(out / "a_labels.tif"), reference)
    assert json.loads((out / "b_labels.json").read_text())["input_file"].endswith("b.tif")
    # a complete set: skipped, even when this run would also write a prior
    (out / "a_prior.tif").unlink()
    stamp = (out / "a_labels.tif").stat().st_mtime_ns
    assert main(args) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().err
    assert (out / "a_labels.tif").stat().st_mtime_ns == stamp
    assert not (out / "a_prior.tif").exists()
    # a prior of another input's (a renamed copy), without labels: not this run's own
    (out / "b_labels.tif").unlink()
    (out / "b_labels.json").unlink()
    tifffile.imwrite(out / "b_prior.tif", np.zeros((8, 8), np.float32))  # not ours
    assert main(args) == 0
    assert "2 skipped" in capsys.readouterr().err
    assert not (out / "b_labels.tif").exists()


def test_a_prior_of_another_input_with_the_same_name_is_never_replaced(tmp_path, capsys):
    """Hunt F4: A/x.tif's prior, left without its labels and sidecar, was taken for an
    interrupted run of B/x.tif (the stamp named the file name only) and replaced
    without --overwrite. Only a set made from this very file (path, size, time) is
    redone; anything else is skipped as existing outputs."""
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    tifffile.imwrite(tmp_path / "A" / "x.tif", disc(seed=1)[0])
    tifffile.imwrite(tmp_path / "B" / "x.tif", disc(seed=2)[0])
    out = tmp_path / "o"

    def run(folder):
        return main(["segment", str(tmp_path / folder / "x.tif"), "-o", str(out), "--prior", *FAST])

    assert run("A") == 0
    (out / "x_labels.tif").unlink()
    (out / "x_labels.json").unlink()
    before = (out / "x_prior.tif").read_bytes()
    capsys.readouterr()
    assert run("B") == 0
    err = capsys.readouterr().err
    assert "0 done, 1 skipped" in err, err
    assert "was stopped" not in err
    assert (out / "x_prior.tif").read_bytes() == before
    assert not (out / "x_labels.tif").exists()
    # the same path holding another image since: not provably its outputs either
    os.replace(tmp_path / "B" / "x.tif", tmp_path / "A" / "x.tif")
    assert run("A") == 0
    assert "0 done, 1 skipped" in capsys.readouterr().err
    assert (out / "x_prior.tif").read_bytes() == before


def test_ctrl_c_twice_stops_a_batch_once_and_cleanly(tmp_path):
    """A second SIGINT while the first one's clean-up joins the fitting threads used to
    abort the process ('terminate called without an active exception', exit 134)."""
    for i in range(3):
        tifffile.imwrite(tmp_path / f"s{i}.tif", disc((64, 64), seed=i)[0])
    args = [str(tmp_path / f"s{i}.tif") for i in range(3)] + ["-o", str(tmp_path / "o")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_dsp.cli", "segment", *args, "--iterations", "2000",
         "--members", "2", "--threads", "2", "--seed", "0", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C as a terminal's shell gives it, even under a runner that ignores it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    err_seen = StreamReader(proc.stderr)
    try:
        err_seen.wait_for(lambda text: "iteration" in text, proc, timeout=120)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err_seen.text()
    assert proc.returncode == 130, err
    assert "terminate called" not in err and "Traceback" not in err
    assert err.count("stopped by SIGINT") == 1


def _three_inputs(tmp_path):
    for i in range(3):
        tifffile.imwrite(tmp_path / f"s{i}.tif", disc((32, 32), seed=i)[0])
    return [str(tmp_path / f"s{i}.tif") for i in range(3)] + ["-o", str(tmp_path / "o")]


def test_a_stop_turned_into_another_exception_still_stops_the_batch(tmp_path, monkeypatch, capsys):
    """Hunt F3: a SIGINT that landed in tifffile's lazy import came out as a RuntimeError
    (Python reports a KeyboardInterrupt raised in ``__set_name__`` so); the batch counted
    a failed file, went on, and ignored every later signal. Now it stops there."""
    import functools

    # the command keeps a SIGINT ignored where it started ignored (a background job):
    # here it starts as a terminal's shell gives it
    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.default_int_handler)

    from napari_dsp import batch

    calls = []

    def run_job(job, **kwargs):
        calls.append(job)

        class Hook(functools.cached_property):
            def __set_name__(self, owner, name):
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands in an import
                for _ in range(10_000):
                    pass

        class Page:
            dataoffset = Hook(lambda self: 0)

    monkeypatch.setattr(batch, "run_job", run_job)
    assert main(["segment", *_three_inputs(tmp_path), *FAST]) == 130
    err = capsys.readouterr().err
    assert len(calls) == 1, err
    assert "stopped by SIGINT; 0 of 3 file(s) finished" in err
    assert "error" not in err and "failed" not in err


def test_a_signal_after_a_swallowed_stop_still_stops_the_run(tmp_path, monkeypatch, capsys):
    """Hunt F3: once a stop had been requested, every later SIGINT/SIGTERM was ignored,
    even when the first one was swallowed and the run went on: only SIGKILL ended it."""
    from napari_dsp import batch

    calls = []

    def run_job(job, **kwargs):
        calls.append(job)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):
                pass
        except KeyboardInterrupt:
            pass  # a library that swallows it
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):
            pass
        raise AssertionError("the SIGTERM was ignored")

    monkeypatch.setattr(batch, "run_job", run_job)
    assert main(["segment", *_three_inputs(tmp_path), *FAST]) == 143
    err = capsys.readouterr().err
    assert len(calls) == 1, err
    assert "stopped by SIGTERM" in err and "ignored" not in err


def test_a_signal_while_the_command_exits_prints_no_traceback(tmp_path):
    """Hunt F2: a second Ctrl-C after the last line, while the interpreter ran its exit
    handlers (logging's, torch's), printed 'Exception ignored in atexit callback' and a
    traceback. The command ignores signals once it has said its last line."""
    script = (
        "import atexit, os, signal, sys, time\n"
        "from napari_dsp.cli import main\n"
        f"sys.argv = ['napari-dsp', 'segment', {str(tmp_path / 'missing.tif')!r}, '-o', "
        f"{str(tmp_path / 'o')!r}]\n"
        "status = main()\n"
        "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.2)))\n"
        "sys.exit(status)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("1 failed"), proc.stderr


@pytest.mark.parametrize(
    "sig, converted", [("SIGTERM", False), ("SIGHUP", False), ("SIGTERM", True)]
)
def test_sigterm_and_sighup_while_starting_say_so(tmp_path, sig, converted):
    """Hunt F8: SIGTERM or SIGHUP while the command imports its modules killed it
    without a word (SIGINT said 'stopped ... while starting'). The handlers are now
    installed before those imports. A signal that the module being imported turns into
    its own error (numpy: 'ImportError: PyCapsule_Import could not import module
    datetime', seen by hand) says the same line, not a traceback."""
    script = (
        "import importlib.abc, os, signal, sys\n"
        "from napari_dsp.cli import main\n"
        "class Hook(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'napari_dsp.cli.parser':\n"
        "            try:\n"
        f"                os.kill(os.getpid(), signal.{sig})\n"
        "                for _ in range(10_000):\n"
        "                    pass\n"
        "            except KeyboardInterrupt:\n"
        f"                if {converted}:\n"
        "                    raise ImportError('could not import module datetime') from None\n"
        "                raise\n"
        "sys.meta_path.insert(0, Hook())\n"
        f"sys.exit(main(['segment', 'x.tif', '-o', {str(tmp_path / 'o')!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 128 + getattr(signal, sig), proc.stderr
    assert (
        proc.stderr.strip() == f"napari-dsp: stopped by {sig} while starting; nothing was written"
    )
    assert not (tmp_path / "o").exists()
