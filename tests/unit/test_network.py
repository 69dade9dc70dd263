"""This machine's own address from its interfaces, without sending a packet (batchcrew.network)."""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from batchcrew import network
from batchcrew.errors import BatchcrewError
from batchcrew.network import default_route_interfaces, interface_address, own_address

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux interfaces")

HEADER = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"


def route(name: str, destination: str, flags: str, metric: int, mask: str) -> str:
    return f"{name}\t{destination}\t010200C0\t{flags}\t0\t0\t{metric}\t{mask}\t0\t0\t0\n"


@pytest.fixture
def no_packets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network (or a name server) fails the test."""

    def refuse(*arguments: Any, **keywords: Any) -> Any:
        raise AssertionError("the address must come from the interfaces, not from the network")

    for name in ("connect", "connect_ex", "sendto", "send"):
        monkeypatch.setattr(socket.socket, name, refuse)
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "create_connection"):
        monkeypatch.setattr(socket, name, refuse)


def usable(address: str) -> bool:
    parsed = ipaddress.IPv4Address(address)
    if parsed.is_loopback or parsed.is_link_local:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((address, 0))  # only an address of this machine can be bound
    return True


def test_default_routes_are_read_lowest_metric_first_and_others_ignored() -> None:
    table = (
        HEADER
        + route("eth0", "00000000", "0003", 100, "00000000")
        + route("eth0", "000200C0", "0001", 0, "00FFFFFF")  # not a default route
        + route("tun0", "00000000", "0002", 0, "00000000")  # default, but not up
        + route("wlan0", "00000000", "0003", 50, "00000000")
        + route("eth1", "00000000", "0003", 200, "00000000")
        + route("eth0", "00000000", "0003", 300, "00000000")  # the same interface again
        + "garbage line\n"
        + route("bad0", "zz", "0003", 0, "00000000")
    )
    assert default_route_interfaces(table) == ["wlan0", "eth0", "eth1"]
    assert default_route_interfaces(HEADER) == []
    assert default_route_interfaces("") == []


def test_interface_addresses_come_from_the_kernel() -> None:
    assert interface_address("lo") == "127.0.0.1"
    assert interface_address("no-such-if0") is None


@pytest.mark.usefixtures("no_packets")
def test_own_address_is_this_machines_and_not_loopback() -> None:
    address = own_address()
    assert usable(address)
    with open(network.ROUTE_TABLE) as table:
        defaults = default_route_interfaces(table.read())
    if defaults:
        assert address == interface_address(defaults[0])


@pytest.mark.usefixtures("no_packets")
def test_without_a_default_route_an_interface_with_an_address_is_used(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(HEADER + route("no-such-if0", "00000000", "0003", 0, "00000000"))
    assert usable(own_address(str(table)))
    assert usable(own_address(str(tmp_path / "missing")))


def test_no_usable_address_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "interface_address", lambda name: "127.0.0.1")
    with pytest.raises(BatchcrewError, match="give the controller host="):
        own_address()
    monkeypatch.setattr(network, "interface_address", lambda name: "169.254.10.1")
    with pytest.raises(BatchcrewError, match="other than loopback or link-local"):
        own_address()


def test_other_systems_are_told_to_give_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(BatchcrewError, match=r"on darwin .*host="):
        own_address()
