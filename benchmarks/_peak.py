"""Run a benchmark step in a fresh Python process and sample its peak memory."""

from __future__ import annotations

import subprocess
import time

import psutil


def run_measured(cmd: list) -> tuple[str, float]:
    """Run ``cmd``; return its stdout and the largest resident size of its whole process
    tree (worker processes included), sampled every 50 ms, in bytes. Raises
    RuntimeError on a non-zero exit."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    out = proc.stdout.read()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd[1:4]))} failed with exit code "
                           f"{proc.returncode}")
    return out, float(peak)
