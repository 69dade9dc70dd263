"""Looking at processes by pid through /proc (the tests run on Linux): groups, liveness,
memory, file descriptors, threads and CPU time.

Owns inspection; killing is the job of the code under test, except for the sweep of what a
failed test left running (`kill_leftovers`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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


def kill_leftovers(pids: Iterable[int]) -> None:
    """SIGKILL whichever of `pids` still live (a failed test's cleanup, so nothing outlives it)."""
    for pid in alive(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_until_gone(pids: Iterable[int], seconds: float = 10.0) -> None:
    """Fail unless every process in `pids` is gone within `seconds`."""
    watched = set(pids)
    try:
        wait_until(lambda: not alive(watched), seconds)
    except AssertionError:
        raise AssertionError(f"still alive after {seconds} s: {sorted(alive(watched))}") from None


@dataclass(frozen=True)
class Footprint:
    """What a process holds: resident memory (MB), open file descriptors, threads."""

    megabytes: float
    fds: int
    threads: int

    def grown_since(self, baseline: Footprint) -> str:
        """The growth since `baseline`, as a text for failure messages and reports."""
        return (
            f"RSS {baseline.megabytes:.0f} -> {self.megabytes:.0f} MB, "
            f"fds {baseline.fds} -> {self.fds}, threads {baseline.threads} -> {self.threads}"
        )


def footprint() -> Footprint:
    """This process's footprint (the controller's, when it runs in the test process)."""
    with open("/proc/self/status") as status:
        rss = next(line for line in status if line.startswith("VmRSS:"))
    return Footprint(
        megabytes=int(rss.split()[1]) / 1024,
        fds=len(os.listdir("/proc/self/fd")),
        threads=len(os.listdir("/proc/self/task")),
    )


class PeakMemory:
    """Samples this process's RSS every 50 ms while in the `with` block; `megabytes` is the
    highest seen."""

    def __init__(self) -> None:
        self.megabytes = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.megabytes = max(self.megabytes, footprint().megabytes)
            if self._done.wait(0.05):
                return


def trimmed_footprint() -> Footprint:
    """This process's footprint once the C allocator has handed its free memory back to the
    system, so that RSS counts what is still held rather than what was once needed."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return footprint()


def wait_with_cpu(process: subprocess.Popen[bytes], seconds: float) -> tuple[int, float]:
    """Wait for a child to exit; return its exit code and the CPU seconds it used (user and
    system). Fails if it is still running after `seconds` (the caller stops it)."""

    def reaped() -> tuple[int, resource.struct_rusage] | None:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        return (status, usage) if pid else None

    status, usage = wait_until(reaped, seconds)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime


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
