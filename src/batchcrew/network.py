"""This machine's own network address, found from its interfaces, for workers on other hosts.

Owns reading the routing table and the IPv4 addresses of the interfaces (Linux). It never sends
a packet (no connect, no DNS lookup) and knows nothing of controllers or clouds.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import sys

from batchcrew.errors import BatchcrewError

__all__ = ["ROUTE_TABLE", "default_route_interfaces", "interface_address", "own_address"]

logger = logging.getLogger("batchcrew.network")

ROUTE_TABLE = "/proc/net/route"
"""Linux's IPv4 routing table, one route a line after a header."""

SIOCGIFADDR = 0x8915
"""Linux's ioctl that reads an interface's IPv4 address."""

RTF_UP = 0x0001
"""The routing-table flag of a route in use."""

IFNAMSIZ = 16
"""Linux's size of an interface name, its final NUL included."""


def default_route_interfaces(table: str) -> list[str]:
    """The interfaces that hold a default route in `/proc/net/route` text, lowest metric first.

    Example:
        >>> table = (
        ...     "Iface\\tDestination\\tGateway\\tFlags\\tRefCnt\\tUse\\tMetric\\tMask\\n"
        ...     "eth0\\t00000000\\t010200C0\\t0003\\t0\\t0\\t100\\t00000000\\n"
        ...     "eth0\\t000200C0\\t00000000\\t0001\\t0\\t0\\t0\\t00FFFFFF\\n"
        ...     "wlan0\\t00000000\\t0100A8C0\\t0003\\t0\\t0\\t50\\t00000000\\n"
        ... )
        >>> default_route_interfaces(table)
        ['wlan0', 'eth0']
    """
    routes: list[tuple[int, str]] = []
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        name, destination, flags, metric, mask = (
            fields[0],
            fields[1],
            fields[3],
            fields[6],
            fields[7],
        )
        try:
            up = int(flags, 16) & RTF_UP
            default = int(destination, 16) == 0 and int(mask, 16) == 0
            order = int(metric)
        except ValueError:
            continue
        if up and default:
            routes.append((order, name))
    return list(dict.fromkeys(name for _, name in sorted(routes)))


def interface_address(name: str) -> str | None:
    """The IPv4 address of interface `name`, or None when it has none (or does not exist).

    Example:
        >>> interface_address("lo")
        '127.0.0.1'
    """
    import fcntl  # POSIX only; this module's callers run on Linux

    request = struct.pack(f"{IFNAMSIZ}s240x", name.encode()[: IFNAMSIZ - 1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
        except OSError:
            return None
    # struct ifreq: the name, then a sockaddr_in (family, port, then the address).
    return socket.inet_ntoa(answer[IFNAMSIZ + 4 : IFNAMSIZ + 8])


def own_address(route_table: str = ROUTE_TABLE) -> str:
    """This machine's IPv4 address that other hosts of its network (an AWS VPC) can reach.

    The address of the interface holding the default route; without one, of the first
    interface with an address that is neither loopback nor link-local. Raises
    `BatchcrewError` when there is none, or on systems other than Linux.

    Example:
        >>> try:
        ...     ipaddress.ip_address(own_address()).is_loopback  # such as '10.0.3.17'
        ... except BatchcrewError:  # a machine whose only network is its loopback
        ...     False
        False
    """
    if not sys.platform.startswith("linux"):
        raise BatchcrewError(
            f"cannot find this machine's network address on {sys.platform} (Linux only): "
            "give the controller host= with an address the workers can reach"
        )
    try:
        with open(route_table) as routes:
            preferred = default_route_interfaces(routes.read())
    except OSError as error:
        logger.warning("cannot read the routing table %s: %s", route_table, error)
        preferred = []
    others = [name for _, name in socket.if_nameindex() if name not in preferred]
    for name in [*preferred, *others]:
        address = interface_address(name)
        if address is not None and _reachable_from_elsewhere(address):
            logger.info("this machine's address: %s (interface %s)", address, name)
            return address
    raise BatchcrewError(
        "cannot find this machine's network address: no interface has an IPv4 address other "
        "than loopback or link-local; give the controller host= with an address the workers "
        "can reach"
    )


def _reachable_from_elsewhere(address: str) -> bool:
    parsed = ipaddress.IPv4Address(address)
    return not (parsed.is_loopback or parsed.is_link_local or parsed.is_unspecified)
