"""Reading headers and axes, writing labels other tools read, atomic and umask-honouring
writes (napari_dsp.io)."""

import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

from napari_dsp import io
from napari_dsp.io import temps as io_temps
from napari_dsp.io import write as io_write

#: Peak memory of a fresh process: VmHWM (getrusage's ru_maxrss would carry over the
#: peak of the forking pytest process through exec).
PEAK = (
    "def peak():\n    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            return int(line.split()[1]) * 1024\n"
)


def _blobs(shape=(32, 40)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((np.hypot(yy - shape[0] / 2, xx - shape[1] / 2) < 8) * 1000 + 100).astype(np.uint16)


# ------------------------------------------------------------------------- reading
def test_ome_tiff_axes_and_pixel_size(tmp_path):
    path = tmp_path / "cells.ome.tif"
    data = np.zeros((4, 2, 32, 40), np.uint16)
    tifffile.imwrite(
        path,
        data,
        ome=True,
        photometric="minisblack",
        metadata={
            "axes": "ZCYX",
            "PhysicalSizeX": 0.25,
            "PhysicalSizeY": 0.25,
            "PhysicalSizeZ": 1.5,
        },
    )
    info = io.read_info(path)
    assert (info.format, info.axes, info.shape) == ("ome-tiff", "ZCYX", (4, 2, 32, 40))
    assert info.pixel_size == {"X": 0.25, "Y": 0.25, "Z": 1.5} and info.unit == "µm"
    arr = io.arrange(info)
    # the channels are never planes: 4 planes of 2 channels, a stack without --stack
    assert (arr.axes, arr.channel_axis, arr.stack, arr.plane) == ("ZCYX", 1, True, (32, 40))
    assert arr.labels_axes == "ZYX" and arr.from_metadata
    assert io.spacing_of(info, arr) == (1.5, 0.25, 0.25)


def test_ome_units_other_than_micrometres(tmp_path):
    path = tmp_path / "nm.ome.tif"
    tifffile.imwrite(
        path,
        np.zeros((32, 40), np.uint8),
        ome=True,
        metadata={
            "axes": "YX",
            "PhysicalSizeX": 65.0,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 65.0,
            "PhysicalSizeYUnit": "nm",
        },
    )
    info = io.read_info(path)
    assert info.pixel_size == {"X": 65.0, "Y": 65.0} and info.unit == "nm"


def test_imagej_hyperstack(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        np.zeros((3, 5, 2, 32, 40), np.uint16),
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.5),
        metadata={"axes": "TZCYX", "spacing": 2.0, "unit": "micron"},
    )
    info = io.read_info(path)
    assert (info.format, info.axes) == ("imagej-tiff", "TZCYX")
    assert info.pixel_size == pytest.approx({"X": 0.5, "Y": 0.5, "Z": 2.0})
    assert info.unit == "µm"
    arr = io.arrange(info)
    assert (arr.axes, arr.channel_axis, arr.stack) == ("TZCYX", 2, True)
    assert arr.plane_axes == "TZ"


def test_singleton_axes_are_dropped_and_alpha_ignored(tmp_path):
    path = tmp_path / "one.ome.tif"
    tifffile.imwrite(path, np.ones((1, 1, 32, 40), np.uint8), ome=True, metadata={"axes": "TCYX"})
    info = io.read_info(path)
    arr = io.arrange(info)
    assert (arr.axes, arr.stack, arr.channel_axis) == ("YX", False, None)
    assert io.read_pixels(info, arr).shape == (32, 40)
    rgba = tmp_path / "rgba.tif"
    tifffile.imwrite(
        rgba, np.zeros((32, 40, 4), np.uint8), photometric="rgb", extrasamples=["unassalpha"]
    )
    info = io.read_info(rgba)
    arr = io.arrange(info)
    assert arr.axes == "YXC" and io.read_pixels(info, arr).shape == (32, 40, 3)


def test_files_without_axes_keep_the_api_rules_and_say_what_was_assumed(tmp_path):
    npy = tmp_path / "stack.npy"
    np.save(npy, np.zeros((2, 3, 32, 40), np.float32))
    info = io.read_info(npy)
    assert info.axes is None and not info.axes_known
    arr = io.arrange(info, stack=True)
    assert arr.axes == "TZYX" and not arr.from_metadata
    assert "taken as T x Z planes" in arr.notes[0]
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((3, 32, 40), np.uint8), photometric="minisblack")
    arr = io.arrange(io.read_info(plain))
    assert not arr.stack and arr.axes == "?YX"  # the API then asks for --stack
    chans = io.arrange(io.read_info(plain), channel_axis=0)
    assert (chans.axes, chans.channel_axis) == ("CYX", 0)


def test_channel_axis_overrides_or_contradicts_metadata(tmp_path):
    path = tmp_path / "slices.tif"  # 3 channels saved by mistake as Z slices
    tifffile.imwrite(path, np.zeros((3, 32, 40), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    arr = io.arrange(io.read_info(path), channel_axis=0)
    assert (arr.axes, arr.stack, arr.channel_axis) == ("CYX", False, 0)
    assert "its Z axis is taken as channels" in arr.notes[0]
    ome = tmp_path / "zc.ome.tif"
    tifffile.imwrite(ome, np.zeros((4, 2, 32, 40), np.uint8), ome=True, metadata={"axes": "ZCYX"})
    with pytest.raises(io.ImageFileError, match="names another axis"):
        io.arrange(io.read_info(ome), channel_axis=0)


def test_compressed_tiffs_read(tmp_path):
    image = _blobs()
    for compression in ("lzw", "zlib", "zstd", "packbits"):
        path = tmp_path / f"{compression}.tif"
        tifffile.imwrite(path, image, compression=compression)
        np.testing.assert_array_equal(io.read_pixels(io.read_info(path)), image)
    rgb = np.stack([image // 8] * 3, -1).astype(np.uint8)
    tifffile.imwrite(tmp_path / "jpeg.tif", rgb, compression="jpeg", photometric="rgb")
    assert io.read_pixels(io.read_info(tmp_path / "jpeg.tif")).shape == (32, 40, 3)


def test_header_is_read_without_decoding(tmp_path):
    """A 30000 x 30000 TIFF of under a megabyte: its header gives the shape, no pixel is
    decoded (the process's memory stays far below the 900 MB of pixels)."""
    path = tmp_path / "huge.tif"
    tile = np.zeros((1024, 1024), np.uint8)
    n = -(-30000 // 1024)
    tifffile.imwrite(
        path,
        (tile for _ in range(n * n)),
        shape=(30000, 30000),
        dtype=np.uint8,
        tile=(1024, 1024),
        compression="zlib",
    )
    assert path.stat().st_size < 2e6
    code = (
        PEAK + "import sys\nfrom napari_dsp import io\n"
        "info = io.read_info(sys.argv[1])\n"
        "print(info.shape, info.nbytes, "
        "peak())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[:2] == ["(30000,", "30000)"] and int(out[2]) == 900_000_000
    assert int(out[3]) < 300e6


@pytest.mark.parametrize(
    "mode, shape, dtype",
    [
        ("L", (20, 30), np.uint8),
        ("I;16", (20, 30), np.uint16),
        ("RGB", (20, 30, 3), np.uint8),
        ("RGBA", (20, 30, 3), np.uint8),
        ("LA", (20, 30), np.uint8),
        ("P", (20, 30, 3), np.uint8),
    ],
)
def test_png_modes(tmp_path, mode, shape, dtype):
    from PIL import Image

    base = Image.fromarray((np.arange(600).reshape(20, 30) % 251).astype(np.uint8))
    im = (
        base.convert(mode)
        if mode != "I;16"
        else Image.fromarray((np.arange(600).reshape(20, 30) * 50).astype(np.uint16))
    )
    path = tmp_path / "x.png"
    im.save(path)
    info = io.read_info(path)
    arr = io.arrange(info)
    data = io.read_pixels(info, arr)
    assert data.shape == shape and data.dtype == dtype
    if mode == "P":  # a palette image gives colours, not palette indices
        np.testing.assert_array_equal(data[..., 0], np.asarray(base.convert("RGB"))[..., 0])


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: (
                np.savez(p.with_suffix(""), a=np.zeros(3))
                or os.replace(str(p.with_suffix("")) + ".npz", p)
            ),
            "is a zip archive",
        ),
        (
            lambda p: np.save(p, np.array([{}, 1], dtype=object), allow_pickle=True),
            "holds Python objects",
        ),
        (lambda p: os.mkfifo(p), "is not a regular file"),
        (
            lambda p: (os.symlink(p.with_name("b.npy"), p), os.symlink(p, p.with_name("b.npy"))),
            "cannot be opened",
        ),
        (lambda p: os.symlink(p.with_name("gone.npy"), p), "broken symbolic link"),
        (lambda p: np.save(p, np.zeros((0, 5))), "no pixel data"),
        (lambda p: np.save(p, np.zeros((8, 8), np.complex64)), "integer or real"),
    ],
)
def test_bad_files_give_one_line(tmp_path, make, message):
    path = tmp_path / "a.npy"
    make(path)
    with pytest.raises(io.ImageFileError, match=message) as err:
        io.read_info(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


# ------------------------------------------------------------------------- writing
def test_label_stack_is_written_as_single_channel_pages_with_metadata(tmp_path):
    labels = np.zeros((3, 32, 40), np.int64)
    labels[:, 5:15, 5:20] = 2
    path = io.write_labels(
        tmp_path / "s_labels.tif",
        labels,
        axes="ZYX",
        pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5},
        unit="µm",
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYX"
        assert all(
            p.photometric == tifffile.PHOTOMETRIC.MINISBLACK and p.samplesperpixel == 1
            for p in tif.pages
        )
        assert len(tif.pages) == 3 and tif.series[0].dtype == np.uint8
        assert tif.imagej_metadata["spacing"] == 2.0
        assert tif.imagej_metadata["unit"] == "micron"
        assert tif.pages[0].software.startswith("napari-dsp")
    info = io.read_info(path)
    assert info.pixel_size == pytest.approx({"Z": 2.0, "Y": 0.5, "X": 0.5})
    np.testing.assert_array_equal(io.read_pixels(info), labels)


@pytest.mark.parametrize(
    "top, dtype, fmt",
    [
        (255, np.uint8, "imagej-tiff"),
        (256, np.uint16, "imagej-tiff"),
        (65535, np.uint16, "imagej-tiff"),
        (70000, np.uint32, "ome-tiff"),
    ],
)
def test_smallest_dtype_that_holds_the_ids(tmp_path, top, dtype, fmt):
    labels = np.zeros((2, 32, 40), np.int64)
    labels[1, 3, 4] = top
    path = io.write_labels(
        tmp_path / "x_labels.tif", labels, axes="TYX", pixel_size={"X": 0.3, "Y": 0.3}, unit="µm"
    )
    info = io.read_info(path)
    assert info.dtype == dtype and info.format == fmt and info.axes == "TYX"
    assert info.pixel_size == pytest.approx({"X": 0.3, "Y": 0.3})
    np.testing.assert_array_equal(io.read_pixels(info), labels)


def test_prior_with_channels_is_written_in_imagej_order(tmp_path):
    prior = np.random.default_rng(0).random((4, 32, 40, 3)).astype(np.float32)
    path = io.write_image(tmp_path / "p_prior.tif", prior, axes="ZYXC")
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "ZCYX" and tif.series[0].dtype == np.float32
        np.testing.assert_array_equal(tif.series[0].asarray(), np.moveaxis(prior, -1, 1))


def test_bad_label_arguments():
    with pytest.raises(TypeError, match="integers"):
        io.write_labels("/nonexistent/x.tif", np.zeros((20, 20), np.float32))
    with pytest.raises(ValueError, match="axes must name"):
        io.write_labels("/nonexistent/x.tif", np.zeros((20, 20), np.uint8), axes="ZYX")
    with pytest.raises(ValueError, match="negative"):
        io.write_labels("/nonexistent/x.tif", -np.ones((20, 20), np.int8))


def test_existing_file_is_never_replaced_unasked(tmp_path):
    path = tmp_path / "keep_labels.tif"
    path.write_bytes(b"precious")
    with pytest.raises(io.OutputExistsError):
        io.write_labels(path, np.zeros((20, 20), np.uint8))
    assert path.read_bytes() == b"precious"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    io.write_labels(path, np.ones((20, 20), np.uint8), overwrite=True)
    assert tifffile.imread(path).sum() == 400


def test_staged_outputs_appear_together_or_not_at_all(tmp_path):
    taken = tmp_path / "b.json"
    with io.Staged() as out:
        out.labels(tmp_path / "a_labels.tif", np.zeros((20, 20), np.uint8), axes="YX")
        out.json(taken, {"x": 1})
        taken.write_text("appeared meanwhile")  # another process, before the commit
        with pytest.raises(io.OutputExistsError):
            out.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]
    assert taken.read_text() == "appeared meanwhile"


def test_a_stop_right_after_a_temporary_file_is_created_leaves_none(tmp_path, monkeypatch):
    """Seen by hand (two SIGINTs as the first output file appeared): a Ctrl-C between
    creating a temporary file and recording it left the .part file behind (a later run
    removed it). Its name is now recorded before it is created."""

    def interrupted(fd):
        raise KeyboardInterrupt  # the signal lands right after os.open

    monkeypatch.setattr(io_temps, "try_lock", interrupted)
    with pytest.raises(KeyboardInterrupt), io.Staged() as out:
        out.labels(tmp_path / "a_labels.tif", np.zeros((20, 20), np.uint8), axes="YX")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask):
    path = tmp_path / "m_labels.tif"
    path.write_bytes(b"old")
    path.chmod(0o600)  # --overwrite does not keep the old file's mode either
    code = (
        "import os, sys, numpy as np\nfrom napari_dsp import io\n"
        f"os.umask({umask})\n"
        "io.write_labels(sys.argv[1], np.zeros((20, 20), np.uint8), overwrite=True)\n"
        "io.write_json(sys.argv[1] + '.json', {'a': 1})"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    for p in (path, tmp_path / "m_labels.tif.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_sidecar_json_is_strict():
    text = json.dumps(
        io_write.jsonable(
            {
                "a": float("nan"),
                "b": [np.float32("inf"), 1],
                "c": np.int64(3),
                "d": (1, 2),
                "e": np.bool_(True),
            }
        ),
        allow_nan=False,
    )
    assert json.loads(text) == {"a": None, "b": [None, 1], "c": 3, "d": [1, 2], "e": True}


def test_stale_temp_files_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    host = io_temps.host_tag()
    stale = tmp_path / f".napari-dsp-{host}-{dead}-abcdef.part"
    live = tmp_path / f".napari-dsp-{host}-{os.getpid()}-abcdef.part"
    legacy = tmp_path / ".cell_labels.ab12cd34.tif.part"
    fresh_legacy = tmp_path / ".other_labels.zz12cd34.tif.part"
    other = tmp_path / ".hidden.part"  # not ours: never touched
    for p in (stale, live, legacy, fresh_legacy, other):
        p.write_bytes(b"x" * 10)
    old = time.time() - 2 * io_temps.LEGACY_TEMP_AGE
    os.utime(legacy, (old, old))
    os.utime(other, (old, old))
    not_legacy = tmp_path / ".notes.20240101.json.part"  # no name mkstemp makes
    not_legacy.write_bytes(b"x")
    os.utime(not_legacy, (old, old))
    # a dead process's name, but a running process holds its lock (another machine or
    # container reusing process ids): kept
    held = tmp_path / f".napari-dsp-{host}-{dead}-123456.part"
    held.write_bytes(b"x")
    fd = os.open(held, os.O_RDONLY)
    assert io_temps.try_lock(fd)
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\n"
            "time.sleep(60)",
            str(held),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    os.close(fd)  # let the other process take it
    try:
        assert locker.stdout.readline().strip() == "locked"
        removed = io.remove_stale_temps(tmp_path)
    finally:
        locker.kill()
        locker.wait()
    assert sorted(p.name for p in removed) == sorted([stale.name, legacy.name])
    assert live.exists() and fresh_legacy.exists() and other.exists()
    assert held.exists() and not_legacy.exists()


def test_png_16_bit_colour_keeps_its_depth(tmp_path):
    import imagecodecs

    data = (np.arange(20 * 30 * 3).reshape(20, 30, 3) * 700 % 65536).astype(np.uint16)
    (tmp_path / "deep.png").write_bytes(imagecodecs.png_encode(data))
    info = io.read_info(tmp_path / "deep.png")
    assert info.dtype == np.uint16 and info.axes == "YXS"
    np.testing.assert_array_equal(io.read_pixels(info), data)


def test_channel_axis_naming_rows_or_columns_is_refused(tmp_path):
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, np.zeros((3, 32, 40), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(io.ImageFileError, match="--channel-axis 1 is its Y axis"):
        io.arrange(io.read_info(path), channel_axis=1)


def test_multipage_rgb_without_axes_keeps_its_samples_as_channels(tmp_path):
    path = tmp_path / "rgbpages.tif"
    for _ in range(3):
        tifffile.imwrite(
            path, np.zeros((32, 40, 3), np.uint8), photometric="rgb", append=True, metadata=None
        )
    info = io.read_info(path)
    assert info.axes[-1] == "S" and not info.axes_known
    arr = io.arrange(info, stack=True)
    assert arr.axes == "ZYXC" and arr.channel_axis == 3


def test_plain_layouts_are_recorded_as_such(tmp_path):
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((32, 40), np.uint8))
    assert io.arrange(io.read_info(tmp_path / "p.tif")).source == "file layout"
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((32, 40), np.uint8), imagej=True)
    assert io.arrange(io.read_info(tmp_path / "ij.tif")).source == "metadata"


def test_output_that_is_a_folder_is_not_replaced(tmp_path):
    (tmp_path / "x_labels.tif").mkdir()
    with pytest.raises(IsADirectoryError):
        io.write_labels(tmp_path / "x_labels.tif", np.zeros((20, 20), np.uint8), overwrite=True)
    assert (tmp_path / "x_labels.tif").is_dir()


def test_temporary_names_are_short(tmp_path):
    name = "n" * (255 - len("_labels.tif")) + "_labels.tif"  # the longest legal name
    path = io.write_labels(tmp_path / name, np.zeros((20, 20), np.uint8))
    assert path.exists() and len(os.fsencode(path.name)) == 255


def test_a_failed_overwrite_puts_the_earlier_files_back(tmp_path, monkeypatch):
    first, second = tmp_path / "a_prior.tif", tmp_path / "a_labels.json"
    first.write_text("old prior")
    second.write_text("old sidecar")
    real = os.replace
    calls = []

    def failing(src, dst, *args, **kwargs):
        calls.append(dst)
        if str(dst) == str(second):
            raise OSError(28, "No space left on device")
        return real(src, dst, *args, **kwargs)

    with io.Staged(overwrite=True) as out:
        out.image(first, np.zeros((20, 20), np.float32), axes="YX")
        out.json(second, {"new": True})
        out.json(tmp_path / "new.json", {"x": 1})
        monkeypatch.setattr(os, "replace", failing)
        with pytest.raises(OSError, match="No space"):
            out.commit()
    monkeypatch.setattr(os, "replace", real)
    assert first.read_text() == "old prior" and second.read_text() == "old sidecar"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_labels.json", "a_prior.tif"]


def test_a_successful_overwrite_leaves_no_backup(tmp_path):
    path = tmp_path / "x_labels.tif"
    path.write_text("old")
    io.write_labels(path, np.ones((20, 20), np.uint8), overwrite=True)
    assert tifffile.imread(path).sum() == 400
    assert [p.name for p in tmp_path.iterdir()] == ["x_labels.tif"]


def test_a_folder_standard_input_and_a_file_of_another_kind_say_what_they_are(tmp_path):
    from PIL import Image

    with pytest.raises(io.ImageFileError, match=r"is a folder; pass the image files in it"):
        io.read_info(tmp_path)
    with pytest.raises(io.ImageFileError, match="standard input is not supported"):
        io.read_info("-")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "png.tif", format="PNG")
    with pytest.raises(
        io.ImageFileError, match=r"is a PNG file named \.tif; rename it to png\.png"
    ):
        io.read_info(tmp_path / "png.tif")
    tifffile.imwrite(tmp_path / "tiff.png", np.zeros((32, 32), np.uint8))  # the other way
    with pytest.raises(
        io.ImageFileError, match=r"is a TIFF file named \.png; rename it to tiff\.tif"
    ):
        io.read_info(tmp_path / "tiff.png")


def test_a_photo_s_exif_orientation_is_noted_not_applied(tmp_path):
    from PIL import Image

    photo = Image.fromarray(np.arange(32 * 40 * 3, dtype=np.uint8).reshape(32, 40, 3))
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees to show"
    photo.save(tmp_path / "photo.jpg", exif=exif)
    info = io.read_info(tmp_path / "photo.jpg")
    assert info.shape == (32, 40, 3)  # the pixels as stored, as Fiji and napari read them
    assert [n for n in info.notes if "EXIF orientation (6" in n and "not applied" in n] == [
        next(n for n in info.notes if "EXIF" in n)
    ] and sum("EXIF" in n for n in info.notes) == 1


def test_what_tifffile_says_about_a_file_is_a_note_not_a_stray_log_line(tmp_path, capfd):
    """A TIFF whose shaped-series description disagrees with its page: tifffile logs a
    warning, which reached the terminal (and napari's console) as a bare line."""
    import logging

    path = tmp_path / "shaped.tif"
    tifffile.imwrite(path, np.ones((64, 64), np.uint8))
    raw = path.read_bytes()
    assert b'{"shape": [64, 64]}' in raw
    path.write_bytes(raw.replace(b'{"shape": [64, 64]}', b'{"shape": [65, 64]}'))
    log = logging.getLogger("tifffile")
    handlers, propagate = list(log.handlers), log.propagate

    info = io.read_info(path)
    pixels = io.read_pixels(info, io.arrange(info))

    assert "tifffile: shaped series shape does not match page shape" in info.notes
    assert pixels.shape == (64, 64)
    assert "shape does not match" not in capfd.readouterr().err
    assert log.handlers == handlers and log.propagate == propagate
