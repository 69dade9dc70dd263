"""Looking at processes by pid through /proc (the tests run on Linux): groups, liveness.

Owns only inspection; killing is the job of the code under test.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tests.support.polling import wait_until


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may contain spaces; the fields follow it.
    return text.rsplit(")", 1)[-1].split()


def _live_processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, stat fields after the name) of every process that is not a zombie."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and fields[0] != "Z":
                yield int(entry), fields


def process_alive(pid: int) -> bool:
    """True while a process with this id exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def zombie_children() -> list[int]:
    """Children of this process that exited and were never reaped."""
    me = str(os.getpid())
    zombies = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and fields[0] == "Z" and fields[1] == me:
                zombies.append(int(entry))
    return zombies


def group_members(pgid: int) -> set[int]:
    """Pids of the live (non-zombie) processes whose process group is `pgid`."""
    return {pid for pid, fields in _live_processes() if int(fields[2]) == pgid}


def children_of(parent: int) -> set[int]:
    """Pids of the live (non-zombie) children of `parent`."""
    return {pid for pid, fields in _live_processes() if int(fields[1]) == parent}


def alive(pids: Iterable[int]) -> set[int]:
    """The pids among `pids` that are still alive."""
    return {pid for pid in pids if process_alive(pid)}


def wait_until_gone(pids: Iterable[int], seconds: float = 10.0) -> None:
    """Fail unless every process in `pids` is gone within `seconds`."""
    watched = set(pids)
    try:
        wait_until(lambda: not alive(watched), seconds)
    except AssertionError:
        raise AssertionError(f"still alive after {seconds} s: {sorted(alive(watched))}") from None


def memory_cgroup(pid: int) -> Path | None:
    """The directory of process `pid`'s memory cgroup (v1, else v2), where it is mounted usually."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory", path.lstrip("/"))
        if (
            hierarchy == "0"
            and not controllers
            and Path("/sys/fs/cgroup/cgroup.controllers").exists()
        ):
            return Path("/sys/fs/cgroup", path.lstrip("/"))
    return None


def memory_limit(pid: int) -> int | None:
    """The memory limit of process `pid`'s cgroup in bytes (None: none, or no cgroup)."""
    cgroup = memory_cgroup(pid)
    for name in ("memory.limit_in_bytes", "memory.max"):
        if cgroup is not None and (cgroup / name).exists():
            text = (cgroup / name).read_text().strip()
            return None if text == "max" else int(text)
    return None


def memory_cgroups_allowed() -> bool:
    """Whether this machine lets the local engine limit memory with cgroups (not RLIMIT_AS)."""
    from batchcrew.localbatch.memory import detect_memory_limits

    limits = detect_memory_limits()
    limits.close()
    return limits.kind.startswith("cgroup")
