"""Where outputs go, against what is read: one spelling of a path (links resolved, and
as a case-insensitive file system compares names), and :func:`overlaps`, the one rule
every entry point that writes applies before it computes anything (the command line's
batches, the dask batches and the out-of-core path alike)."""

from __future__ import annotations

import contextlib
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from .temps import new_temp


def path_key(path: Path, fold: bool = False) -> str:
    """One spelling of a path: the real folder (symbolic links resolved) and the name;
    with ``fold``, as a case-insensitive file system compares names (NFC, case-folded)."""
    real = os.path.normcase(os.path.realpath(path))
    return unicodedata.normalize("NFC", real).casefold() if fold else real


def inode_of(path: Path) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def overlaps(outputs: Sequence, inputs: Sequence) -> list[tuple[Path, Path, str]]:
    """The one rule every entry point that writes applies before it computes anything:
    no output is an input (the same path, however spelt, or a hard link to it),
    contains one (replacing a folder such as a zarr store would remove it), or lies
    inside one (it would be written into the input). Paths are compared by their
    spelling and by the file system's identity of every folder on the way, so another
    spelling that names the same place (a link, another case on macOS or Windows) is
    caught too. Returns ``(output, input, what would happen)`` for each such pair."""
    found = []
    for out in (Path(p) for p in outputs):
        key, inode = path_key(out), inode_of(out)
        out_chain = _identities(out)
        for src in (Path(p) for p in inputs):
            src_key, src_inode = path_key(src), inode_of(src)
            if key == src_key or (inode is not None and inode == src_inode):
                found.append((out, src, f"would replace the input {src}"))
            elif src_key.startswith(key.rstrip(os.sep) + os.sep) or (
                inode is not None and inode in _identities(src)[1:]
            ):
                found.append(
                    (out, src, f"contains the input {src}, which replacing it would remove")
                )
            elif key.startswith(src_key.rstrip(os.sep) + os.sep) or (
                src_inode is not None and src_inode in out_chain[1:]
            ):
                found.append(
                    (out, src, f"lies inside the input {src}, which writing it would change")
                )
    return found


def _identities(path: Path) -> list:
    """The file system's identity (device, inode) of ``path`` and of every folder above
    it, nearest first (None where one does not exist)."""
    real = Path(os.path.abspath(path))
    return [inode_of(p) for p in (real, *real.parents)]


def probe_folder(folder: Path) -> tuple[Optional[str], bool]:
    """Whether outputs can be written in ``folder`` (or, where it does not exist yet, in
    its nearest existing parent, where it will be created), and whether that file system
    ignores the case of names. Returns ``(problem or None, case_insensitive)``; leaves
    nothing behind."""
    base = Path(os.path.abspath(folder))
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        return f"{base} is a file, so the folder {folder} cannot be created", False
    try:
        tmp, fd = new_temp(base)
    except OSError as exc:
        return f"cannot write in {base} ({exc.strerror or exc})", False
    try:
        twin = tmp.with_name(tmp.name.upper())
        return None, os.path.exists(twin)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
