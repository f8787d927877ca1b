"""The package as a user installs it: the plain wheel (API and command line, no napari),
and the napari plugin that napari finds when napari is installed beside it."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

import napari_dsp
from tests.fast import TINY_FLAGS

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = Path(napari_dsp.__file__).parent / "napari.yaml"


def _python_names() -> list[str]:
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    return [c["python_name"] for c in manifest["contributions"]["commands"]]


def test_manifest_is_a_regular_file_in_git():
    """The packaged manifest is the file itself, never a symlink: a clone where symlinks
    are not checked out (Windows without developer mode) still builds a working plugin.
    The root ``napari.yaml`` is the link, to it."""
    assert MANIFEST.is_file() and not MANIFEST.is_symlink()
    assert "contributions" in yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    staged = subprocess.run(
        ["git", "ls-files", "-s", "src/napari_dsp/napari.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    if not staged:
        pytest.skip("the manifest is not committed yet")
    assert staged[0] == "100644", "src/napari_dsp/napari.yaml must be committed as a file"


def test_a_clone_without_symlinks_builds_a_wheel_with_the_manifest(tmp_path):
    """As on Windows without symlinks: clone the committed tree with symlinks checked out
    as plain text files, build the wheel, and find the whole manifest in it."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "-c", "core.symlinks=false", str(ROOT), str(clone)],
        check=True,
        timeout=120,
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(clone)],
        check=True,
        timeout=300,
    )
    with zipfile.ZipFile(next(dist.glob("napari_dsp-*.whl"))) as wheel:
        manifest = yaml.safe_load(wheel.read("napari_dsp/napari.yaml"))
    assert manifest["name"] == "napari-dsp"
    assert manifest["contributions"]["widgets"]


def test_manifest_commands_import_without_napari():
    """Every command the manifest names imports without napari or Qt: the widget's
    modules are imported when napari asks for the widget."""
    modules = sorted({name.split(":")[0] for name in _python_names()})
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "gui = [m for m in ('napari', 'qtpy', 'magicgui', 'superqt') if m in sys.modules]\n"
        "assert not gui, gui\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_plugin_loads_with_napari():
    """With napari installed, npe2 reads the manifest and every command resolves."""
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-dsp"
    manifest.validate_imports()
    for name in _python_names():
        module, attr = name.split(":")
        assert callable(getattr(importlib.import_module(module), attr))


def test_wheel_installs_and_segments_without_napari(tmp_path):
    """Build the wheel, install it into a fresh virtual environment (PyTorch first, the
    version this suite runs with, as the README says), check that napari is not there,
    segment a file with the command line, and validate the manifest with npe2."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=300,
    )
    wheel = next(dist.glob("napari_dsp-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    torch_version = importlib.import_module("torch").__version__.split("+")[0]
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, f"torch=={torch_version}"], check=True, timeout=600)
    subprocess.run([*pip, str(wheel)], check=True, timeout=600)

    probe = "import importlib.util as u; print(u.find_spec('napari'), u.find_spec('qtpy'))"
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    assert found.stdout.split() == ["None", "None"], found.stdout

    image = np.zeros((48, 48), np.uint16)
    image[12:36, 12:36] = 1000
    image += np.random.default_rng(0).integers(0, 50, image.shape, dtype=np.uint16)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(bin_dir / "napari-dsp"), "segment", str(tmp_path / "cells.tif"), "-o", str(out)]
        + TINY_FLAGS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    labels = tifffile.imread(out / "cells_labels.tif")
    assert labels.shape == image.shape and labels.max() == 1

    subprocess.run([*pip, "npe2"], check=True, timeout=600)
    proc = subprocess.run(
        [str(bin_dir / "npe2"), "validate", "napari-dsp", "--imports"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
