"""Finding this process's memory cgroup from /proc, and the commands that apply a limit
(localbatch.memory), on made-up /proc files and mount points."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchcrew.localbatch.memory import (
    ENTER_CGROUP,
    SHELL,
    AddressSpaceLimits,
    CgroupLimits,
    _own_cgroup,
)


def fake_proc(tmp_path: Path, cgroup: str, mountinfo: str) -> str:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mountinfo)
    return str(proc)


def mount_line(root: str, mount_point: Path | str, filesystem: str, options: str) -> str:
    return f"35 31 0:32 {root} {mount_point} rw,relatime shared:9 - {filesystem} cgroup {options}\n"


def test_a_v1_memory_cgroup_is_found_below_its_mount_point(tmp_path: Path) -> None:
    mount = tmp_path / "memory"
    (mount / "jobs" / "a1").mkdir(parents=True)
    proc = fake_proc(
        tmp_path,
        "9:name=systemd:/\n4:memory:/jobs/a1\n2:cpu,cpuacct:/other\n0::/\n",
        mount_line("/", tmp_path / "cpu", "cgroup", "rw,cpu,cpuacct")
        + mount_line("/", mount, "cgroup", "rw,memory")
        + mount_line("/", tmp_path / "unified", "cgroup2", "rw"),
    )
    assert _own_cgroup(1, proc) == mount / "jobs" / "a1"


def test_a_mount_of_part_of_the_hierarchy_is_followed(tmp_path: Path) -> None:
    # In a container the hierarchy is often mounted from the container's own cgroup down.
    mount = tmp_path / "with space"
    (mount / "inner").mkdir(parents=True)
    proc = fake_proc(
        tmp_path,
        "0::/docker/abc/inner\n",
        mount_line("/docker/abc", str(mount).replace(" ", "\\040"), "cgroup2", "rw"),
    )
    assert _own_cgroup(2, proc) == mount / "inner"


@pytest.mark.parametrize(
    ("cgroup", "mountinfo", "message"),
    [
        ("0::/\n", "", "in no memory cgroup"),
        ("4:memory:/gone\n", "MOUNT", "no mounted cgroup v1 hierarchy holds"),
    ],
)
def test_without_a_memory_cgroup_the_reason_is_given(
    tmp_path: Path, cgroup: str, mountinfo: str, message: str
) -> None:
    mountinfo = mountinfo.replace("MOUNT", mount_line("/", tmp_path, "cgroup", "rw,memory"))
    with pytest.raises(OSError, match=message):
        _own_cgroup(1, fake_proc(tmp_path, cgroup, mountinfo))


def test_cgroup_commands_move_themselves_in_before_running(tmp_path: Path) -> None:
    limits = CgroupLimits(1, tmp_path)
    confinement = limits.confine("c1", 300 * 2**20)
    assert (tmp_path / "c1" / "memory.limit_in_bytes").read_text() == str(300 * 2**20)
    assert confinement.command(["python", "-V"]) == (
        SHELL,
        "-c",
        ENTER_CGROUP,
        str(tmp_path / "c1" / "cgroup.procs"),
        "python",
        "-V",
    )
    assert confinement.oom_killed() is False  # no memory.oom_control: never killed
    (tmp_path / "c1" / "memory.oom_control").write_text("oom_kill_disable 0\noom_kill 2\n")
    assert confinement.oom_killed() is True


def test_address_space_limits_round_up_to_whole_kibibytes() -> None:
    command = AddressSpaceLimits().confine("c1", 10 * 2**20 + 1).command(["true"])
    assert command[3:] == ("10241", "true")
