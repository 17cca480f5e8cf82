"""Which host names mean this machine: loopback detection and this host's interface addresses (ioctl)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket

__all__ = ["hosts_equivalent", "is_loopback_host", "local_interface_addresses"]

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback_host(host: str) -> bool:
    """True if ``host`` (a name or an address) resolves to loopback addresses only."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def local_interface_addresses() -> list[str]:
    """This machine's own non-loopback, non-link-local addresses (Linux interfaces, else hostname)."""
    found: set[str] = set()
    with contextlib.suppress(ImportError, OSError, AttributeError):
        import fcntl
        import struct

        for _, ifname in socket.if_nameindex():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname.encode()[:15]))
                except OSError:
                    continue  # no IPv4 address on this interface
                found.add(socket.inet_ntoa(packed[20:24]))
    with contextlib.suppress(OSError), open("/proc/net/if_inet6") as f:
        for line in f:
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    if not found:
        with contextlib.suppress(OSError):
            found.update(str(i[4][0]) for i in socket.getaddrinfo(socket.gethostname(), None))
    usable = []
    for addr in found:
        ip = ipaddress.ip_address(addr)
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
            usable.append(addr)
    return sorted(usable)


def hosts_equivalent(a: str, b: str) -> bool:
    """True if ``a`` and ``b`` are the same host name, or both name this machine."""
    a, b = a.lower(), b.lower()
    if a == b:
        return True
    this_machine = {"host.docker.internal", socket.gethostname().lower(), *local_interface_addresses()}

    def local(h: str) -> bool:
        return h in this_machine or is_loopback_host(h)

    return local(a) and local(b)
