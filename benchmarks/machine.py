"""Readings of this machine and of one process, from /proc and the standard library only.

Shared by the suite, by every system's driver (in its own environment) and by the swarm.
It reads; it starts nothing.
"""

from __future__ import annotations

import os


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def load_average() -> float:
    """The machine's 1-minute load average."""
    return os.getloadavg()[0]


def status_megabytes(field: str, pid: int | str = "self") -> float:
    """A memory field of /proc/<pid>/status in MB (10^6 bytes): VmHWM (peak resident), VmRSS.

    Example:
        >>> status_megabytes("VmRSS") > 1
        True
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise ValueError(f"no {field} in /proc/{pid}/status")


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, every process) since boot."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
