"""Temporary files and moving them into place: short names in the output folder
(``.napari-dsp-<host>-<pid>-<random>.part``, so a legal output name never becomes too
long), created with the mode the user's umask gives a new file and locked while written;
:func:`commit_file` never replaces a file unless asked; :func:`remove_stale_temps`
removes what a killed run left; :func:`name_max` is the file system's name limit.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Optional


class OutputExistsError(FileExistsError):
    """An output exists and ``overwrite`` was not given."""


#: Temporary files: ``.napari-dsp-<host>-<pid>-<random>.part``, short whatever the output
#: name (a legal output name never becomes too long), and named after the process that
#: writes them, so a later run can tell a dead run's leftovers from a live run's file.
TEMP_PREFIX = ".napari-dsp-"
_TEMP_RE = re.compile(r"^\.napari-dsp-([0-9a-f]{8})-(\d+)-[0-9a-f]{6}\.part$")
#: Temporary files of napari-dsp 0.1 (``tempfile.mkstemp`` next to ``<stem>_labels.tif``,
#: ``<stem>_prior.tif`` and ``<stem>_labels.json``): removed once this old.
_LEGACY_TEMP_RE = re.compile(r"^\..+_(labels|prior)\.[a-z0-9_]{8}\.(tif|json)\.part$")
LEGACY_TEMP_AGE = 3600.0
#: A temporary file of another machine (a shared folder) is removed once this old.
FOREIGN_TEMP_AGE = 24 * 3600.0


def host_tag() -> str:
    """This machine and process-id namespace (containers with one host name but their
    own process ids differ), in 8 hex digits."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return hashlib.sha1(f"{socket.gethostname()}/{namespace}".encode()).hexdigest()[:8]


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False if another
    process holds it (True where file locks do not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks
        return True


def new_temp(folder: Path, created: Optional[list] = None) -> tuple[Path, int]:
    """Create an empty temporary file in ``folder`` with the mode the umask gives a new
    file (``tempfile.mkstemp`` would make it 0600), locked while this process writes it.
    Returns its path and the open descriptor that holds the lock. ``created``, if
    given, gets the path before the file exists: a Ctrl-C right after it is created
    (before this returns) still leaves its owner the name to remove."""
    for _ in range(100):
        path = folder / f"{TEMP_PREFIX}{host_tag()}-{os.getpid()}-{secrets.token_hex(3)}.part"
        if created is not None:
            created.append(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            if created is not None:
                created.remove(path)  # another's: never removed by us
            continue
        try_lock(fd)
        return path, fd
    raise OSError(errno.EEXIST, f"cannot create a temporary file in {folder}")


def new_temp_folder(folder: Path) -> Path:
    """Create an empty temporary folder in ``folder``, named as :func:`new_temp` names
    files (a zarr array written before it is moved into place); a later run removes it
    if this process dies before (:func:`remove_stale_temps`)."""
    for _ in range(100):
        path = folder / f"{TEMP_PREFIX}{host_tag()}-{os.getpid()}-{secrets.token_hex(3)}.part"
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise OSError(errno.EEXIST, f"cannot create a temporary folder in {folder}")


def _pid_alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)


def remove_stale_temps(folder) -> list[Path]:
    """Remove the temporary files and folders a killed run left in ``folder``: this
    machine's whose process is gone, another machine's after a day without a change (a
    run writing a temporary folder touches it as each plane is written), an older
    version's after an hour; never a file whose lock a running process holds.

    Parameters
    ----------
    folder : str or Path
        The output folder to clean.

    Returns
    -------
    list of Path
        What was removed.
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host, now = host_tag(), time.time()
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or not name.endswith(".part"):
            continue
        try:
            is_folder = entry.is_dir(follow_symlinks=False)
            if not (is_folder or entry.is_file(follow_symlinks=False)):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        m = _TEMP_RE.match(name)
        if m:
            stale = (
                not _pid_alive(int(m.group(2))) if m.group(1) == host else age > FOREIGN_TEMP_AGE
            )
        else:
            stale = not is_folder and bool(_LEGACY_TEMP_RE.match(name)) and age > LEGACY_TEMP_AGE
        if stale and is_folder and m:  # a zarr array of a dead run (no lock on folders)
            import shutil

            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.exists(entry.path):
                removed.append(Path(entry.path))
        elif stale and _remove_unlocked(entry.path):
            removed.append(Path(entry.path))
    return removed


def _remove_unlocked(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        if not try_lock(fd):
            return False  # a live run is writing it
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def name_max(folder: Path) -> int:
    """Longest file name (bytes) the file system of ``folder`` (or its nearest existing
    parent) allows."""
    folder = Path(os.path.abspath(folder))
    for candidate in (folder, *folder.parents):
        if os.path.exists(candidate):  # False for a name too long, where .exists() raises
            try:
                return int(os.pathconf(candidate, "PC_NAME_MAX"))
            except (OSError, ValueError, AttributeError):
                return 255
    return 255


def commit_file(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move a complete temporary file to ``path``; without ``overwrite`` never replace a
    file, even one created meanwhile by another process."""
    if not os.path.exists(tmp):
        raise OSError(
            errno.ENOENT,
            "its temporary file was removed by another process; run it again",
            str(path),
        )
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path exists, atomically
    except FileExistsError:
        raise OutputExistsError(
            errno.EEXIST, "exists (use overwrite to replace it)", str(path)
        ) from None
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        # no hard links here (FAT, exFAT, some network shares): claim the name with an
        # exclusive create, then move the file onto the claim
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise OutputExistsError(
                errno.EEXIST, "exists (use overwrite to replace it)", str(path)
            ) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


#: What os.link raises where a file system has no hard links.
_NO_LINKS = {
    getattr(errno, name)
    for name in ("EPERM", "ENOTSUP", "EOPNOTSUPP", "EXDEV", "EMLINK", "ENOSYS", "EACCES")
    if hasattr(errno, name)
}
