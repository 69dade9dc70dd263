"""Memory limits for the local engine's containers: a memory cgroup (v2 or v1), else RLIMIT_AS.

Owns finding where this process may create memory cgroups, one cgroup per running container
(made, limited, read for out-of-memory kills, emptied and removed), and the shell prefix that
puts a container's command under its limit before the command runs. It starts no process and
knows nothing of Batch jobs.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("batchcrew.localbatch.memory")

__all__ = [
    "LIMIT_BYTES_MIN",
    "AddressSpaceLimits",
    "CgroupLimits",
    "Confinement",
    "MemoryLimits",
    "detect_memory_limits",
]

LIMIT_BYTES_MIN = 6 * 1024 * 1024
"""Docker's smallest memory limit (6 MB); smaller limits are refused as Docker refuses them."""

SHELL = "/bin/sh"
"""The shell that applies a limit, then replaces itself with the container's command."""

ENTER_CGROUP = 'echo $$ > "$0" && exec "$@"'
"""Moves the shell into the cgroup whose `cgroup.procs` is `$0`, then runs the command."""

LIMIT_ADDRESS_SPACE = 'ulimit -v "$0"; exec "$@"'
"""Sets RLIMIT_AS to `$0` KiB, then runs the command."""

ENGINE_DIRECTORY = "batchcrew-engine-{pid}"
"""The cgroup that holds the containers' cgroups of the engine in process `pid`."""

SECONDS_RELEASE = 5.0
"""How long a cgroup's last processes have to die before the cgroup is given up on."""

_ENGINE_DIRECTORY = re.compile(r"batchcrew-engine-(\d+)")
_OOM_KILLS = re.compile(rb"^oom_kill (\d+)$", re.MULTILINE)


class Confinement(abc.ABC):
    """The memory limit of one run of one container."""

    @abc.abstractmethod
    def command(self, argv: Sequence[str]) -> tuple[str, ...]:
        """`argv` wrapped so that it runs under the limit from its first instruction."""

    @abc.abstractmethod
    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the run for reaching the limit."""

    @abc.abstractmethod
    def release(self) -> None:
        """Kill what is left of the run and remove its cgroup (safe to call twice)."""


class MemoryLimits(abc.ABC):
    """How an engine limits its containers' memory; `kind` says which way.

    Example:
        >>> limits = AddressSpaceLimits()
        >>> limits.confine("job-1", 256 * 2**20).command(["python", "-V"])
        ('/bin/sh', '-c', 'ulimit -v "$0"; exec "$@"', '262144', 'python', '-V')
    """

    kind: str

    @abc.abstractmethod
    def confine(self, name: str, limit_bytes: int) -> Confinement:
        """A new confinement of `limit_bytes` for a run of container `name`."""

    def close(self) -> None:  # noqa: B027 (only cgroups have something to remove)
        """Remove what the limits made (the engine calls it when it stops)."""


class CgroupLimits(MemoryLimits):
    """One memory cgroup per running container, below `parent` (cgroup `version` 1 or 2).

    The limit covers the container's memory without swap. A run whose process the kernel
    kills for reaching it reports `oom_killed()` as Docker's `State.OOMKilled` does.

    Example:
        >>> limits = detect_memory_limits()  # a CgroupLimits where cgroups can be made
        >>> isinstance(limits, CgroupLimits) == limits.kind.startswith("cgroup v")
        True
        >>> limits.close()
    """

    def __init__(self, version: int, parent: Path) -> None:
        self.version = version
        self.parent = parent
        self.kind = f"cgroup v{version}"

    def confine(self, name: str, limit_bytes: int) -> Confinement:
        directory = self.parent / name
        directory.mkdir()
        try:
            if self.version == 1:
                _write(directory / "memory.limit_in_bytes", str(limit_bytes))
                # Swap counts too, when the kernel accounts for it (the file exists then).
                _write_if_present(directory / "memory.memsw.limit_in_bytes", str(limit_bytes))
            else:
                _write(directory / "memory.max", str(limit_bytes))
                _write_if_present(directory / "memory.swap.max", "0")
        except OSError:
            directory.rmdir()
            raise
        events = "memory.oom_control" if self.version == 1 else "memory.events"
        return _CgroupConfinement(directory, directory / events)

    def close(self) -> None:
        try:
            self.parent.rmdir()
        except OSError as error:
            logger.warning("could not remove the cgroup %s: %s", self.parent, error)


class _CgroupConfinement(Confinement):
    def __init__(self, directory: Path, events: Path) -> None:
        self.directory = directory
        self.events = events

    def command(self, argv: Sequence[str]) -> tuple[str, ...]:
        return (SHELL, "-c", ENTER_CGROUP, str(self.directory / "cgroup.procs"), *argv)

    def oom_killed(self) -> bool:
        try:
            found = _OOM_KILLS.search(self.events.read_bytes())
        except OSError:
            return False
        return found is not None and int(found[1]) > 0

    def release(self) -> None:
        deadline = time.monotonic() + SECONDS_RELEASE
        while self.directory.exists():
            for pid in _members(self.directory):
                # A process that left the container's process group is still in its cgroup.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                self.directory.rmdir()
            except FileNotFoundError:
                return
            except OSError as error:
                if time.monotonic() > deadline:
                    logger.warning("could not remove the cgroup %s: %s", self.directory, error)
                    return
                time.sleep(0.01)


class AddressSpaceLimits(MemoryLimits):
    """RLIMIT_AS, where no memory cgroup can be made: allocations beyond the limit fail.

    A process over the limit gets an allocation failure (`MemoryError` in Python) instead of a
    kill, so no run is reported as killed for memory, and the limit counts address space (which
    threads and memory maps take without using), not memory in use.

    Example:
        >>> AddressSpaceLimits().confine("job-1", 2**30).oom_killed()
        False
    """

    kind = "RLIMIT_AS"

    def confine(self, name: str, limit_bytes: int) -> Confinement:
        return _AddressSpaceConfinement(limit_bytes)


class _AddressSpaceConfinement(Confinement):
    def __init__(self, limit_bytes: int) -> None:
        self.limit_kib = -(-limit_bytes // 1024)

    def command(self, argv: Sequence[str]) -> tuple[str, ...]:
        return (SHELL, "-c", LIMIT_ADDRESS_SPACE, str(self.limit_kib), *argv)

    def oom_killed(self) -> bool:
        return False

    def release(self) -> None:
        pass


def detect_memory_limits(proc: str = "/proc/self") -> MemoryLimits:
    """The best way this process has to limit its children's memory.

    A cgroup v2 below this process's own, if the memory controller can be enabled there; else
    a cgroup v1 below its own memory cgroup; else RLIMIT_AS, with a warning in the log that
    says why no cgroup could be made.

    Example:
        >>> limits = detect_memory_limits()
        >>> limits.kind in ("cgroup v2", "cgroup v1", "RLIMIT_AS")
        True
        >>> limits.close()
    """
    reasons: list[str] = []
    for version in (2, 1):
        try:
            parent = _engine_cgroup(version, proc)
        except OSError as error:
            reasons.append(f"cgroup v{version}: {error}")
            continue
        logger.info("job memory is limited with cgroup v%d below %s", version, parent.parent)
        return CgroupLimits(version, parent)
    logger.warning(
        "no memory cgroup can be made here (%s); job memory is limited with RLIMIT_AS instead: "
        "a job over its memory gets allocation errors rather than an out-of-memory kill, and "
        "address space it reserves counts as used",
        "; ".join(reasons),
    )
    return AddressSpaceLimits()


def _engine_cgroup(version: int, proc: str) -> Path:
    """Make this engine's cgroup below this process's own; `OSError` says why it cannot."""
    base = _own_cgroup(version, proc)
    if version == 2:
        if "memory" not in _read_words(base / "cgroup.controllers"):
            raise OSError(f"the memory controller is not available in {base}")
        if "memory" not in _read_words(base / "cgroup.subtree_control"):
            _write(base / "cgroup.subtree_control", "+memory")
    _remove_stale_engine_cgroups(base)
    parent = base / ENGINE_DIRECTORY.format(pid=os.getpid())
    parent.mkdir(exist_ok=True)
    try:
        if version == 2:
            _write(parent / "cgroup.subtree_control", "+memory")
        elif not (parent / "memory.limit_in_bytes").exists():
            raise OSError(f"{parent} has no memory.limit_in_bytes")
    except OSError:
        parent.rmdir()
        raise
    return parent


def _own_cgroup(version: int, proc: str) -> Path:
    """The directory of this process's cgroup in the hierarchy of `version` (1: memory)."""
    wanted: str | None = None
    for line in Path(proc, "cgroup").read_text().splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if (version == 2 and hierarchy == "0" and not controllers) or (
            version == 1 and "memory" in controllers.split(",")
        ):
            wanted = path
    if wanted is None:
        raise OSError(f"this process is in no {'unified' if version == 2 else 'memory'} cgroup")
    for line in Path(proc, "mountinfo").read_text().splitlines():
        # "<id> <parent> <device> <root> <mount point> <options> ... - <type> <source> <options>"
        mount, _, filesystem = (part.split() for part in line.partition(" - "))
        if len(mount) < 5 or len(filesystem) < 3:
            continue
        if version == 2:
            matches = filesystem[0] == "cgroup2"
        else:
            matches = filesystem[0] == "cgroup" and "memory" in filesystem[2].split(",")
        if matches:
            root, mount_point = _unescape(mount[3]), _unescape(mount[4])
            relative = wanted[len(root) :] if wanted.startswith(root) else wanted
            directory = Path(mount_point, relative.lstrip("/"))
            if directory.is_dir():
                return directory
    raise OSError(f"no mounted cgroup v{version} hierarchy holds this process's cgroup {wanted}")


def _remove_stale_engine_cgroups(base: Path) -> None:
    """Remove the empty cgroups that engines killed before they could clean up have left."""
    for directory in base.iterdir():
        found = _ENGINE_DIRECTORY.fullmatch(directory.name)
        if found is None or _alive(int(found[1])):
            continue
        for child in [*directory.iterdir(), directory]:
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()


def _members(directory: Path) -> list[int]:
    try:
        return [int(pid) for pid in (directory / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_words(path: Path) -> list[str]:
    return path.read_text().split()


def _write(path: Path, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def _write_if_present(path: Path, text: str) -> None:
    if path.exists():
        _write(path, text)


def _unescape(text: str) -> str:
    """A path as /proc/self/mountinfo writes it, with `\\040` for a space, back to itself."""
    return re.sub(r"\\([0-7]{3})", lambda octal: chr(int(octal[1], 8)), text)
