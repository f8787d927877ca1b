import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_dsp.cli import main
from tests.fast import TINY_FLAGS
from tests.synthetic import dark_on_bright

FAST = [*TINY_FLAGS, "--quiet"]


@pytest.fixture
def images(tmp_path):
    a, _ = dark_on_bright((40, 48), seed=1)
    b, _ = dark_on_bright((32, 32), seed=2)
    paths = {"a": tmp_path / "a.tif", "b": tmp_path / "b.npy", "c": tmp_path / "c.png"}
    tifffile.imwrite(paths["a"], (a * 1000).astype(np.uint16))
    np.save(paths["b"], b)
    from PIL import Image

    Image.fromarray((np.clip(b, 0, 1) * 255).astype(np.uint8)).save(paths["c"])
    return paths


def test_single_file(images, tmp_path):
    out = tmp_path / "res" / "a_out.tif"
    assert main(["segment", str(images["a"]), "-o", str(out), "--prior", *FAST]) == 0
    labels = tifffile.imread(out)
    assert labels.shape == (40, 48) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1}
    meta = json.loads((tmp_path / "res" / "a_out.json").read_text())
    assert meta["settings"]["seed"] == 0 and meta["settings"]["n_iter"] == 4
    assert meta["device"] == "cpu" and "torch" in meta["versions"]
    prior = tifffile.imread(tmp_path / "res" / "a_out_prior.tif")
    assert prior.shape == (40, 48) and prior.dtype == np.float32


def test_texture_prior_is_written_with_the_prior(images, tmp_path):
    """--texture --prior: the texture channels' prior as a 6-channel float32 TIFF (axes
    CYX, the input's pixel size) beside the prior, named in the sidecar; it counts as
    one of the input's outputs (a rerun skips, --overwrite replaces it)."""
    from tests.core.test_texture import two_textures

    image, _ = two_textures((48, 64))
    src = tmp_path / "tex.tif"
    tifffile.imwrite(
        src,
        (image * 255).astype(np.uint8),
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.5),
        metadata={"unit": "um"},
    )
    out = tmp_path / "o"
    args = ["segment", str(src), "-o", str(out), "--prior", "--texture", *FAST]
    assert main(args) == 0
    with tifffile.TiffFile(out / "tex_prior_texture.tif") as tif:
        assert tif.series[0].axes == "CYX" and tif.series[0].shape == (6, 48, 64)
        assert tif.series[0].dtype == np.float32
        assert tif.pages[0].tags["XResolution"].value == (2, 1)
    assert tifffile.imread(out / "tex_prior.tif").shape == (48, 64)
    meta = json.loads((out / "tex_labels.json").read_text())
    assert meta["texture_prior_file"].endswith("tex_prior_texture.tif")
    (out / "tex_prior_texture.tif").write_text("kept")
    assert main(args) == 0
    assert (out / "tex_prior_texture.tif").read_text() == "kept"
    assert main([*args, "--overwrite"]) == 0
    assert tifffile.imread(out / "tex_prior_texture.tif").shape == (6, 48, 64)
    assert main(["segment", str(src), "-o", str(tmp_path / "p"), "--prior", *FAST]) == 0
    assert not (tmp_path / "p" / "tex_prior_texture.tif").exists()


def test_batch_with_a_corrupt_file_goes_on_and_fails(images, tmp_path, capsys):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00this is not a tiff")
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(images["a"]),
            str(bad),
            str(images["b"]),
            str(images["c"]),
            "-o",
            str(out),
            "--classes",
            "3",
            *FAST,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.tif: cannot be read as an image" in err
    assert "Traceback" not in err
    assert "3 done, 0 skipped (outputs exist), 1 failed" in err
    for stem, shape in (("a", (40, 48)), ("b", (32, 32)), ("c", (32, 32))):
        labels = tifffile.imread(out / f"{stem}_labels.tif")
        assert labels.shape == shape and set(np.unique(labels)) <= {1, 2, 3}
        assert (out / f"{stem}_labels.json").exists()
    assert not (out / "broken_labels.tif").exists()
    assert not list(out.glob("*.part"))


def test_existing_output_is_not_overwritten(images, tmp_path, capsys):
    out = tmp_path / "keep.tif"
    out.write_bytes(b"precious")
    assert main(["segment", str(images["a"]), "-o", str(out), *FAST]) == 0
    assert out.read_bytes() == b"precious"
    assert "exist(s) (use --overwrite to replace its outputs)" in capsys.readouterr().err
    assert main(["segment", str(images["a"]), "-o", str(out), "--overwrite", *FAST]) == 0
    assert tifffile.imread(out).shape == (40, 48)


def test_bad_input_files_give_one_line(tmp_path, capsys):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    const = tmp_path / "flat.npy"
    np.save(const, np.zeros((32, 32)))
    code = main(
        [
            "segment",
            str(txt),
            str(const),
            str(tmp_path / "missing.tif"),
            "-o",
            str(tmp_path / "o"),
            *FAST,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "unsupported file type '.txt'" in err
    assert "flat.npy: is constant (every pixel is 0)" in err
    assert "missing.tif: no such file" in err
    assert "Traceback" not in err


def test_bad_setting_is_one_line(images, tmp_path, capsys):
    code = main(
        ["segment", str(images["a"]), "-o", str(tmp_path / "x.tif"), "--window", "4", "--quiet"]
    )
    assert code == 2
    assert "window must be odd" in capsys.readouterr().err


def test_subprocess_console_script(images, tmp_path):
    out = tmp_path / "sub"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_dsp.cli",
            "segment",
            str(images["a"]),
            str(images["b"]),
            "-o",
            str(out),
            "--iterations",
            "4",
            "--members",
            "2",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2/2" in proc.stderr  # the progress bar
    assert tifffile.imread(out / "a_labels.tif").shape == (40, 48)
    assert tifffile.imread(out / "b_labels.tif").shape == (32, 32)


def test_demo_runs_on_builtin_data(tmp_path, capsys):
    assert (
        main(
            [
                "demo",
                "--iterations",
                "3",
                "--members",
                "2",
                "--threads",
                "1",
                "--quiet",
                "-o",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "foreground:" in out and "connected objects" in out
    labels = tifffile.imread(tmp_path / "coins_labels.tif")
    assert labels.shape == (303, 384)


def test_kanezaki_with_scribbles_from_a_file(tmp_path):
    from tests.synthetic import scribbles_for, textured_regions

    image, truth = textured_regions(3, size=64, seed=1)
    np.save(tmp_path / "img.npy", image)
    tifffile.imwrite(tmp_path / "strokes.tif", scribbles_for(truth, 1).astype(np.uint8))
    out = tmp_path / "k.tif"
    code = main(
        [
            "segment",
            str(tmp_path / "img.npy"),
            "-o",
            str(out),
            "--method",
            "kanezaki",
            "--scribbles",
            str(tmp_path / "strokes.tif"),
            "--min-labels",
            "3",
            "--members",
            "3",
            "--iterations",
            "20",
            "--threads",
            "1",
            "--seed",
            "0",
            "--quiet",
            "--prior",
        ]
    )
    assert code == 0
    labels = tifffile.imread(out)
    assert set(np.unique(labels)) == {1, 2, 3}
    meta = json.loads((tmp_path / "k.json").read_text())
    assert meta["settings"]["method"] == "kanezaki" and meta["kanezaki"]["scribbles"] is True
    assert (tmp_path / "k_prior.tif").exists()


def test_no_prior_flag(tmp_path):
    from tests.synthetic import textured_regions

    image, _ = textured_regions(3, size=48, seed=0)
    np.save(tmp_path / "img.npy", image)
    code = main(
        [
            "segment",
            str(tmp_path / "img.npy"),
            "-o",
            str(tmp_path / "o.tif"),
            "--method",
            "kanezaki",
            "--no-prior-superpixels",
            "--max-iter",
            "30",
            "--quiet",
            "--prior",
            "--seed",
            "0",
        ]
    )
    assert code == 0
    meta = json.loads((tmp_path / "o.json").read_text())
    assert meta["settings"]["prior_superpixels"] is False
    assert not (tmp_path / "o_prior.tif").exists()


def test_max_pixels_guard_and_unwritable_output(images, tmp_path, capsys):
    code = main(
        ["segment", str(images["a"]), "-o", str(tmp_path / "x.tif"), "--max-pixels", "1000", *FAST]
    )
    assert code == 1
    assert "40x48 = 1,920 pixels per plane is above --max-pixels 1,000" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):  # root ignores permissions: use a file as parent
            blocker = tmp_path / "blocker"
            blocker.write_text("x")
            target = blocker / "out.tif"
        else:
            target = locked / "out.tif"
        code = main(["segment", str(images["a"]), "-o", str(target), *FAST])
        err = capsys.readouterr().err
        # found before the fit, not after it
        assert code == 2 and "nothing was computed" in err and "Traceback" not in err
        assert "cannot write in" in err or "is a file, so the folder" in err
    finally:
        locked.chmod(0o700)


def test_output_equal_to_input_is_refused(tmp_path, capsys):
    a, _ = dark_on_bright((32, 32))
    path = tmp_path / "same.tif"
    tifffile.imwrite(path, (a * 1000).astype(np.uint16))
    before = path.read_bytes()
    assert main(["segment", str(path), "-o", str(path), "--overwrite", *FAST]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_ctrl_c_leaves_complete_outputs_and_a_rerun_resumes(images, tmp_path, monkeypatch, capsys):
    from napari_dsp import api as seg_module

    real = seg_module.segment
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(seg_module, "segment", interrupted)
    out = tmp_path / "batch"
    argv = ["segment", str(images["a"]), str(images["b"]), str(images["c"]), "-o", str(out), *FAST]
    assert main(argv) == 130
    assert "stopped by SIGINT" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.json", "a_labels.tif"]
    first = (out / "a_labels.tif").read_bytes()
    monkeypatch.setattr(seg_module, "segment", real)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "a_labels.tif" in err and "exist(s) (use --overwrite" in err
    assert (out / "a_labels.tif").read_bytes() == first
    assert (out / "b_labels.tif").exists() and (out / "c_labels.tif").exists()


def test_stack_flag(tmp_path):
    a, _ = dark_on_bright((32, 32), seed=1)
    tifffile.imwrite(
        tmp_path / "z.tif", (np.stack([a, a, a]) * 1000).astype(np.uint16), photometric="minisblack"
    )
    assert (
        main(["segment", str(tmp_path / "z.tif"), "-o", str(tmp_path / "zl.tif"), "--stack", *FAST])
        == 0
    )
    assert tifffile.imread(tmp_path / "zl.tif").shape == (3, 32, 32)
    # without --stack a (3, Y, X) file is refused with the way out in the message
    code = main(["segment", str(tmp_path / "z.tif"), "-o", str(tmp_path / "no.tif"), *FAST])
    assert code == 1


def test_truncated_tiff_in_a_batch(images, tmp_path, capsys):
    whole = (images["a"]).read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "o"
    code = main(["segment", str(cut), str(images["b"]), "-o", str(out), *FAST])
    err = capsys.readouterr().err
    assert code == 1 and "cut.tif: cannot be read as an image" in err
    assert "Traceback" not in err
    assert (out / "b_labels.tif").exists() and not (out / "cut_labels.tif").exists()


@pytest.mark.parametrize(
    "shape, axis, stack, expected",
    [
        ((40, 50), None, False, (40, 50)),
        ((40, 50, 3), None, False, (40, 50)),
        ((3, 40, 50), 0, False, (40, 50)),
        ((7, 40, 50), None, True, (40, 50)),
        ((7, 2, 40, 50), 1, True, (40, 50)),
    ],
)
def test_max_pixels_counts_the_spatial_plane(shape, axis, stack, expected, tmp_path):
    """The plane --max-pixels is checked against, from the header (io.arrange)."""
    from napari_dsp import io

    np.save(tmp_path / "x.npy", np.zeros(shape, np.uint8))
    assert io.arrange(io.read_info(tmp_path / "x.npy"), axis, stack).plane == expected


@pytest.mark.parametrize("command", [[], ["segment"], ["demo"]])
def test_help_of_every_command_works_without_torch(command):
    """`--help` answers at once: it never imports torch (nor napari)."""
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from napari_dsp.cli import main\n"
        "try:\n    main(sys.argv[1:] + ['--help'])\nexcept SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('torch', 'napari', 'sklearn') if m in sys.modules]\n"
        "print('HEAVY', heavy, time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "usage: napari-dsp" in out.stdout
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("HEAVY []"), last
    if command:
        assert "--iterations" in out.stdout and "%%" not in out.stdout  # escaped once


def test_texture_flag_on_a_file_and_its_refusal_on_a_stack(tmp_path, capsys):
    from tests.core.test_texture import two_textures

    image, truth = two_textures((64, 64))
    tifffile.imwrite(tmp_path / "t.tif", (image * 1000).astype(np.uint16))
    out = tmp_path / "t_labels.tif"
    assert main(["segment", str(tmp_path / "t.tif"), "-o", str(out), "--texture", *FAST]) == 0
    assert tifffile.imread(out).shape == (64, 64)
    meta = json.loads((tmp_path / "t_labels.json").read_text())
    assert meta["settings"]["texture"] is True and meta["fit"]["texture"]["channels"] == 6
    tifffile.imwrite(
        tmp_path / "z.tif",
        (np.stack([image, image]) * 1000).astype(np.uint16),
        photometric="minisblack",
    )
    capsys.readouterr()
    code = main(
        [
            "segment",
            str(tmp_path / "z.tif"),
            "-o",
            str(tmp_path / "z_l.tif"),
            "--stack",
            "--texture",
            *FAST,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "single 2-D images" in err and "Traceback" not in err
    assert not (tmp_path / "z_l.tif").exists()


def test_version_and_names_too_long_for_the_file_system(tmp_path, capsys):
    import napari_dsp

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == (
        f"napari-dsp {napari_dsp.__version__}"
    )
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint8))
    for output in (tmp_path / ("c" * 252 + ".tif"), tmp_path / ("d" * 260) / "out"):
        assert main(["segment", str(tmp_path / "a.tif"), "-o", str(output), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "bytes long; the file system allows" in err and "Errno" not in err, err


def test_ctrl_c_while_the_command_starts_is_one_line_not_a_traceback(tmp_path):
    """A Ctrl-C in the first second lands while numpy and tifffile load: the command
    says it stopped (exit 130), as it does later, instead of a KeyboardInterrupt
    traceback. The interrupt is raised by an import hook at that very moment."""
    code = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'napari_dsp.cli.common':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from napari_dsp.cli import main\n"
        f"sys.exit(main(['segment', {str(tmp_path / 'a.tif')!r}, '-o', {str(tmp_path / 'o')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert "stopped by SIGINT while starting; nothing was written" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["segment", "demo"])
def test_an_empty_output_is_refused(images, tmp_path, capsys, monkeypatch, command):
    """Hunt F11: -o '' (-o "$OUT" with OUT unset) wrote into the current folder."""
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [command, *([str(images["a"])] if command == "segment" else []), "-o", "", *FAST]
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    assert "-o is empty (is a shell variable unset?); give an output folder" in (
        capsys.readouterr().err
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    from napari_dsp.batch import BatchError, plan_batch

    with pytest.raises(BatchError, match="output is empty"):
        plan_batch([images["a"]], "")  # the API (segment_files) alike


def test_demo_checks_its_output_folder_before_fitting(tmp_path, capsys, monkeypatch):
    """Hunt F12: demo -o into a folder that cannot be written ran the whole fit, then
    said '[Errno 1] Operation not permitted'; it is refused up front, as segment does."""
    from napari_dsp import api
    from napari_dsp.io import places

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted before the output folder was checked")

    monkeypatch.setattr(api, "segment", no_fit)
    (tmp_path / "file").write_text("not a folder")
    assert main(["demo", "-o", str(tmp_path / "file" / "sub"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "is a file, so the folder" in err and "nothing was computed" in err

    def read_only(folder):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(places, "new_temp", read_only)
    assert main(["demo", "-o", str(tmp_path / "ro"), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"cannot write in {tmp_path} (Operation not permitted)" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "ro").exists()
