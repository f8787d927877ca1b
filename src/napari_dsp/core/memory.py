"""Memory this process can still use, without importing torch (the command line checks
a file's size against it before the fit's modules load).

Memory available is what ``psutil`` reports, capped on Linux by the cgroup limit when
one is set at the cgroup root (a container's memory limit, not the host's; a limit set
for a sub-cgroup, as some batch systems do without a cgroup namespace, is not seen).
"""

from __future__ import annotations

import os
from typing import Optional


def available_memory() -> Optional[float]:
    """Bytes this process can still allocate: ``psutil``'s available memory, capped by
    the cgroup's remaining allowance where a limit is set (Linux). None where unknown."""
    have: Optional[float] = None
    try:
        import psutil

        have = float(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil missing or unsupported platform
        have = None
    limit = cgroup_memory_left()
    if limit is not None:
        have = limit if have is None else min(have, limit)
    return have


#: cgroup v2 and v1 files: (limit, usage).
CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def cgroup_memory_left(files=CGROUP_FILES) -> Optional[float]:
    """The cgroup's memory limit minus its usage, or None when no limit is set."""
    for limit_file, usage_file in files:
        try:
            with open(limit_file) as fh:
                text = fh.read().strip()
            if text == "max":
                return None
            limit = float(text)
            with open(usage_file) as fh:
                usage = float(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit >= 2**60:  # cgroup v1 reports "no limit" as a huge number
            return None
        return max(0.0, limit - usage)
    return None


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
