"""Process resource figures reported by training and benchmarks."""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path


def reset_peak_rss() -> None:
    """Start a new peak from the current resident memory (Linux), so one process can measure step after step."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started or since `reset_peak_rss`, in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
